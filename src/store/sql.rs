//! SQL that SQLite and PostgreSQL share word for word, written once.

/// The columns a message row is read from, in the order both backends read them.
macro_rules! message_columns {
    () => {
        "id, body, attempts, enqueued_at, task_id, grp, meta, first_received_at"
    };
}

/// What a message `m` with a group must also be to be handed out from a queue
/// ordered by group ([`crate::domain::settings::Ordering::Group`]): the oldest of
/// its group that is not dead.
macro_rules! group_head {
    () => {
        "(m.grp IS NULL OR NOT EXISTS (SELECT 1 FROM messages o
             WHERE o.queue_id = m.queue_id AND o.grp = m.grp AND o.id < m.id AND o.state != 2))"
    };
}

pub(crate) use {group_head, message_columns};
