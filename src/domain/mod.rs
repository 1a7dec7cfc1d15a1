//! The rules of Hopper: names, settings, messages, receipts, leases, task states
//! and the long-poll, with the types they are written in.
//!
//! Nothing here knows HTTP or SQL. Handlers call in with parsed values; storage is
//! reached only through the traits of [`storage`], which the backends of
//! the `store` module implement: the store depends on the domain, never the reverse.

pub mod access;
pub mod clients;
pub mod clock;
pub mod delivery;
pub mod error;
pub mod grants;
pub mod log;
pub mod messages;
pub mod names;
pub mod queues;
pub mod settings;
pub mod storage;
pub mod streams;
pub mod tasks;
pub mod waiters;
pub mod wakeups;

pub use clients::{AccessKeyId, AwsKeyRecord, ClientRecord};
pub use error::DomainError;
pub use grants::{Action, Grant, ResourceKind};
pub use messages::{
    Message, MessageId, MessageState, NewMessage, PushOutcome, PushRequest, Receipt, Received,
    Settled, Settlement,
};
pub use names::{ClientId, QueueName, StreamName};
pub use queues::{QueueCounts, QueueInfo, QueueService, ReceiveRequest, Upsert};
pub use settings::{QueueSettings, SettingsPatch};
pub use storage::{
    AwsKeyStore, ClientStore, Durability, LogStore, QueueStore, RecordKind, RecordStore, Store,
    StoreError, StoreResult, StreamStore, TaskStore,
};
pub use streams::{
    Appended, ConsumerOffset, EventId, NewEvent, ReadFrom, StoredEvent, StreamInfo,
    StreamRetention, StreamService,
};
pub use tasks::{
    NewTask, TaskCounts, TaskCreated, TaskEnding, TaskFinish, TaskFinished, TaskId, TaskMessage,
    TaskRecord, TaskService, TaskSettings, TaskState, TaskStatus,
};
pub use waiters::Waiters;
pub use wakeups::{Revocation, Wakeups};
