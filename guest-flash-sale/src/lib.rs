//! The `FlashSaleItem` aggregate as an eshost guest component: the rules are
//! in [`domain`]; `eshost-guest` does the WIT glue.

pub mod domain;

pub use domain::FlashSaleItem;

eshost_guest::export_aggregate!(FlashSaleItem);
