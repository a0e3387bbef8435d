//! The `FlashSaleItem` aggregate as an eshost guest component: the rules are
//! in [`domain`], its buyer list in [`buyers`]; `eshost-guest` does the WIT
//! glue.

pub mod buyers;
pub mod domain;

pub use domain::FlashSaleItem;

eshost_guest::export_aggregate!(FlashSaleItem);
