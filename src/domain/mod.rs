//! The rules of Hopper: names, settings, receipts, leases and the long-poll.
//!
//! Nothing here knows HTTP or SQL: handlers call in with parsed values, stores
//! are reached only through the traits of `crate::store`.

pub mod clock;
pub mod delivery;
pub mod error;
pub mod grants;
pub mod names;
pub mod queues;
pub mod settings;
pub mod streams;
pub mod tasks;
pub mod waiters;
pub mod wakeups;

pub use error::DomainError;
pub use grants::{Action, Grant, ResourceKind};
pub use names::{ClientId, QueueName, StreamName};
pub use queues::{QueueService, ReceiveRequest};
pub use settings::{QueueSettings, SettingsPatch};
pub use streams::StreamService;
pub use tasks::{TaskId, TaskService, TaskSettings, TaskStatus};
pub use waiters::Waiters;
pub use wakeups::{Revocation, Wakeups};
