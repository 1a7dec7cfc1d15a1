//! Hopper: an asynchronous HTTP front door with durable queues.
//!
//! The way of a request is the module tree:
//! - [`api`]: the HTTP edge (parse, call the domain, answer; errors mapped in one place);
//! - [`auth`]: credentials, verification cache, principals and client creation;
//! - [`domain`]: the rules (names, settings, receipts, long-poll), no HTTP or SQL;
//! - [`store`]: persistence traits and backends (SQLite with group commit, PostgreSQL);
//! - [`delivery`]: Hopper calling upstream HTTP APIs with a queue's messages;
//! - [`routes`]: endpoints of the config file mapped onto queues, tasks and upstreams;
//! - [`server`] and [`config`]: start-up, shutdown and configuration;
//! - [`cli`]: `hopper queues`, `streams`, `tasks`: commands over a running server's API;
//! - [`bench`]: `hopper bench`.

pub mod api;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;
