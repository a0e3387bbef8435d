//! The `BankAccount` aggregate: a second domain, to show that the host loads
//! aggregates it was never compiled against. An account is opened once, takes
//! deposits, and declines (as a recorded event) a withdrawal it cannot cover.

use eshost_guest::{Aggregate, Event, Refusal, parse, parse_event};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankAccount {
    pub id: String,
    pub owner: Option<String>,
    /// In the smallest currency unit.
    pub balance: u64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenAccount {
    owner: String,
}

/// The payload of Deposit, Withdraw, MoneyDeposited and MoneyWithdrawn.
#[derive(Debug, Serialize, Deserialize)]
struct Amount {
    amount: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AccountOpened {
    account_id: String,
    owner: String,
}

#[derive(Debug, Serialize, Deserialize)]
struct WithdrawalDeclined {
    amount: u64,
    reason: String,
}

impl BankAccount {
    fn require_open(&self) -> Result<(), Refusal> {
        match self.owner {
            Some(_) => Ok(()),
            None => Err(Refusal::PreconditionFailed(format!(
                "account {} is not open",
                self.id
            ))),
        }
    }
}

fn positive(command: &str, payload: &str) -> Result<u64, Refusal> {
    let Amount { amount } = parse(command, payload)?;
    u64::try_from(amount)
        .ok()
        .filter(|&a| a >= 1)
        .ok_or_else(|| Refusal::InvalidCommand(format!("amount must be at least 1, got {amount}")))
}

impl Aggregate for BankAccount {
    const NAME: &'static str = "BankAccount";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    const COMMANDS: &'static [&'static str] = &["OpenAccount", "Deposit", "Withdraw"];
    const EVENTS: &'static [&'static str] = &[
        "AccountOpened",
        "MoneyDeposited",
        "MoneyWithdrawn",
        "WithdrawalDeclined",
    ];

    fn new(id: String) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    fn set_id(&mut self, id: String) {
        self.id = id;
    }

    fn decide(&self, command: &str, payload: &str) -> Result<Vec<Event>, Refusal> {
        match command {
            "OpenAccount" => {
                let open: OpenAccount = parse(command, payload)?;
                if open.owner.trim().is_empty() {
                    return Err(Refusal::InvalidCommand("owner must not be empty".into()));
                }
                if self.owner.is_some() {
                    return Err(Refusal::PreconditionFailed(format!(
                        "account {} is already open",
                        self.id
                    )));
                }
                Ok(vec![Event::new(
                    "AccountOpened",
                    &AccountOpened {
                        account_id: self.id.clone(),
                        owner: open.owner,
                    },
                )])
            }
            "Deposit" => {
                let amount = positive(command, payload)?;
                self.require_open()?;
                Ok(vec![Event::new(
                    "MoneyDeposited",
                    &Amount {
                        amount: amount as i64,
                    },
                )])
            }
            "Withdraw" => {
                let amount = positive(command, payload)?;
                self.require_open()?;
                if amount > self.balance {
                    return Ok(vec![Event::new(
                        "WithdrawalDeclined",
                        &WithdrawalDeclined {
                            amount,
                            reason: "insufficient_funds".into(),
                        },
                    )]);
                }
                Ok(vec![Event::new(
                    "MoneyWithdrawn",
                    &Amount {
                        amount: amount as i64,
                    },
                )])
            }
            other => Err(Refusal::UnknownCommand(format!(
                "{} has no command {other:?}",
                Self::NAME
            ))),
        }
    }

    fn evolve(&mut self, event: &str, payload: &str) -> Result<(), String> {
        match event {
            "AccountOpened" => {
                let opened: AccountOpened = parse_event(event, payload)?;
                self.owner = Some(opened.owner);
            }
            "MoneyDeposited" => {
                let Amount { amount } = parse_event(event, payload)?;
                self.balance += amount.max(0) as u64;
            }
            "MoneyWithdrawn" => {
                let Amount { amount } = parse_event(event, payload)?;
                self.balance = self
                    .balance
                    .checked_sub(amount.max(0) as u64)
                    .ok_or_else(|| {
                        format!(
                            "MoneyWithdrawn of {amount} exceeds balance {}",
                            self.balance
                        )
                    })?;
            }
            "WithdrawalDeclined" => {
                let _: WithdrawalDeclined = parse_event(event, payload)?;
            }
            other => return Err(format!("{} has no event {other:?}", Self::NAME)),
        }
        Ok(())
    }
}

eshost_guest::export_aggregate!(BankAccount);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(account: &mut BankAccount, command: &str, payload: &str) -> Result<Vec<Event>, Refusal> {
        let events = account.decide(command, payload)?;
        for e in &events {
            account.evolve(&e.name, &e.payload).unwrap();
        }
        Ok(events)
    }

    #[test]
    fn deposits_and_withdrawals_never_overdraw() {
        let mut account = BankAccount::new("acc-1".into());
        assert!(matches!(
            run(&mut account, "Deposit", r#"{"amount":5}"#),
            Err(Refusal::PreconditionFailed(_))
        ));
        run(&mut account, "OpenAccount", r#"{"owner":"ada"}"#).unwrap();
        run(&mut account, "Deposit", r#"{"amount":100}"#).unwrap();
        assert_eq!(
            run(&mut account, "Withdraw", r#"{"amount":30}"#).unwrap()[0].name,
            "MoneyWithdrawn"
        );
        assert_eq!(
            run(&mut account, "Withdraw", r#"{"amount":71}"#).unwrap()[0].name,
            "WithdrawalDeclined"
        );
        assert_eq!(account.balance, 70);
        assert!(matches!(
            run(&mut account, "Deposit", r#"{"amount":0}"#),
            Err(Refusal::InvalidCommand(_))
        ));
        assert!(matches!(
            run(&mut account, "OpenAccount", r#"{"owner":"bob"}"#),
            Err(Refusal::PreconditionFailed(_))
        ));
    }
}
