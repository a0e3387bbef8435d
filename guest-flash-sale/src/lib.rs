//! The `FlashSaleItem` aggregate as an eshost guest component.
//!
//! The rules live in [`domain`]; the `glue` module (compiled for wasm32 only)
//! exports them through the `eshost:aggregate` WIT world.

pub mod domain;

#[cfg(target_arch = "wasm32")]
mod glue {
    use crate::domain::{self, FlashSaleItem, Refusal};
    use std::cell::RefCell;

    wit_bindgen::generate!({ path: "../wit", world: "aggregate-guest" });

    use exports::eshost::aggregate::aggregate::{
        Command, CommandError, Event, Guest, GuestState, Manifest, State,
    };

    struct Component;

    impl Guest for Component {
        type State = StateResource;

        fn describe() -> Manifest {
            Manifest {
                name: domain::AGGREGATE.into(),
                version: env!("CARGO_PKG_VERSION").into(),
                commands: domain::COMMANDS.iter().map(|c| c.to_string()).collect(),
                events: domain::EVENTS.iter().map(|e| e.to_string()).collect(),
            }
        }
    }

    /// Resources are handed out by shared reference, hence the `RefCell`.
    struct StateResource(RefCell<FlashSaleItem>);

    impl GuestState for StateResource {
        fn new(id: String) -> Self {
            Self(RefCell::new(FlashSaleItem::new(id)))
        }

        fn restore(id: String, snapshot: Vec<u8>) -> Result<State, String> {
            let mut item: FlashSaleItem =
                serde_json::from_slice(&snapshot).map_err(|e| format!("bad snapshot: {e}"))?;
            item.id = id;
            Ok(State::new(Self(RefCell::new(item))))
        }

        fn apply(&self, events: Vec<Event>) -> Result<(), String> {
            let mut item = self.0.borrow_mut();
            events
                .iter()
                .try_for_each(|e| item.evolve(&e.name, &e.payload))
        }

        fn handle(&self, command: Command) -> Result<Vec<Event>, CommandError> {
            let events = self.0.borrow().decide(&command.name, &command.payload);
            events
                .map(|events| {
                    events
                        .into_iter()
                        .map(|e| Event {
                            name: e.name,
                            payload: e.payload,
                        })
                        .collect()
                })
                .map_err(|refusal| match refusal {
                    Refusal::UnknownCommand(m) => CommandError::UnknownCommand(m),
                    Refusal::InvalidPayload(m) => CommandError::InvalidPayload(m),
                    Refusal::InvalidCommand(m) => CommandError::InvalidCommand(m),
                    Refusal::PreconditionFailed(m) => CommandError::PreconditionFailed(m),
                })
        }

        fn to_json(&self) -> String {
            serde_json::to_string(&*self.0.borrow()).unwrap_or_default()
        }

        fn snapshot(&self) -> Vec<u8> {
            serde_json::to_vec(&*self.0.borrow()).unwrap_or_default()
        }
    }

    export!(Component);
}
