//! The `BankAccount` aggregate: a second domain, to show that the host loads
//! aggregates it was never compiled against. An account is opened once, takes
//! deposits, and declines (as a recorded event) a withdrawal it cannot cover.

use eshost_guest::{Aggregate, Refusal};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BankAccount {
    pub id: String,
    pub owner: Option<String>,
    /// In the smallest currency unit.
    pub balance: u64,
}

/// Amounts are signed so that a negative one is refused as an invalid
/// command, not an invalid payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "name", content = "payload")]
pub enum Command {
    OpenAccount { owner: String },
    Deposit { amount: i64 },
    Withdraw { amount: i64 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "name", content = "payload", rename_all_fields = "camelCase")]
pub enum Event {
    AccountOpened { account_id: String, owner: String },
    MoneyDeposited { amount: u64 },
    MoneyWithdrawn { amount: u64 },
    WithdrawalDeclined { amount: u64, reason: String },
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

fn positive(amount: i64) -> Result<u64, Refusal> {
    u64::try_from(amount)
        .ok()
        .filter(|&a| a >= 1)
        .ok_or_else(|| Refusal::InvalidCommand(format!("amount must be at least 1, got {amount}")))
}

impl Aggregate for BankAccount {
    const NAME: &'static str = "BankAccount";
    const VERSION: &'static str = env!("CARGO_PKG_VERSION");
    type Command = Command;
    type Event = Event;

    fn new(id: String) -> Self {
        Self {
            id,
            ..Self::default()
        }
    }

    fn set_id(&mut self, id: String) {
        self.id = id;
    }

    fn decide(&self, command: Command) -> Result<Vec<Event>, Refusal> {
        match command {
            Command::OpenAccount { owner } => {
                if owner.trim().is_empty() {
                    return Err(Refusal::InvalidCommand("owner must not be empty".into()));
                }
                if self.owner.is_some() {
                    return Err(Refusal::PreconditionFailed(format!(
                        "account {} is already open",
                        self.id
                    )));
                }
                Ok(vec![Event::AccountOpened {
                    account_id: self.id.clone(),
                    owner,
                }])
            }
            Command::Deposit { amount } => {
                let amount = positive(amount)?;
                self.require_open()?;
                Ok(vec![Event::MoneyDeposited { amount }])
            }
            Command::Withdraw { amount } => {
                let amount = positive(amount)?;
                self.require_open()?;
                if amount > self.balance {
                    return Ok(vec![Event::WithdrawalDeclined {
                        amount,
                        reason: "insufficient_funds".into(),
                    }]);
                }
                Ok(vec![Event::MoneyWithdrawn { amount }])
            }
        }
    }

    fn evolve(&mut self, event: Event) -> Result<(), String> {
        match event {
            Event::AccountOpened { owner, .. } => self.owner = Some(owner),
            Event::MoneyDeposited { amount } => self.balance += amount,
            Event::MoneyWithdrawn { amount } => {
                self.balance = self.balance.checked_sub(amount).ok_or_else(|| {
                    format!(
                        "MoneyWithdrawn of {amount} exceeds balance {}",
                        self.balance
                    )
                })?;
            }
            Event::WithdrawalDeclined { .. } => {}
        }
        Ok(())
    }
}

eshost_guest::export_aggregate!(BankAccount);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(account: &mut BankAccount, command: Command) -> Result<Vec<Event>, Refusal> {
        let events = account.decide(command)?;
        for e in &events {
            account.evolve(e.clone()).unwrap();
        }
        Ok(events)
    }

    #[test]
    fn deposits_and_withdrawals_never_overdraw() {
        use Command::*;
        let mut account = BankAccount::new("acc-1".into());
        assert!(matches!(
            run(&mut account, Deposit { amount: 5 }),
            Err(Refusal::PreconditionFailed(_))
        ));
        run(
            &mut account,
            OpenAccount {
                owner: "ada".into(),
            },
        )
        .unwrap();
        run(&mut account, Deposit { amount: 100 }).unwrap();
        assert_eq!(
            run(&mut account, Withdraw { amount: 30 }).unwrap(),
            [Event::MoneyWithdrawn { amount: 30 }]
        );
        assert!(matches!(
            run(&mut account, Withdraw { amount: 71 }).unwrap()[..],
            [Event::WithdrawalDeclined { amount: 71, .. }]
        ));
        assert_eq!(account.balance, 70);
        assert!(matches!(
            run(&mut account, Deposit { amount: 0 }),
            Err(Refusal::InvalidCommand(_))
        ));
        assert!(matches!(
            run(
                &mut account,
                OpenAccount {
                    owner: "bob".into()
                }
            ),
            Err(Refusal::PreconditionFailed(_))
        ));
    }
}
