//! The `hopper` command: parses arguments and calls into the library.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use hopper::config::{Config, LogFormat, Overrides};
use hopper::domain::ClientId;

/// glibc's malloc spends measurable time consolidating free lists under the many
/// small, short-lived allocations of request handling; mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "hopper",
    version,
    about = "An asynchronous HTTP front door in one binary: durable queues, event streams, \
             tasks, delivery to upstream HTTP APIs, and routes for existing clients",
    long_about = LONG_ABOUT
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// `hopper --help`: what the binary serves.
const LONG_ABOUT: &str = "\
An asynchronous HTTP front door in one binary: requests are accepted fast, stored
durably (in an embedded SQLite file, fsynced before any 2xx, or in PostgreSQL shared
by any number of nodes) and processed later. Hopper serves:

  queues    push, pop, leases with ack, nack and extend, long-polls, delays,
            idempotency keys, dead letters
  streams   append-only event logs with one writer each and consumer offsets
  tasks     request-reply: a caller waits for a worker's result, or gets 202
            and the task to fetch later
  delivery  Hopper itself calls upstream HTTP APIs with each message, retrying
            with backoff behind circuit breakers, signed as Standard Webhooks
  routes    endpoints of the configuration file mapped onto all of these, or
            forwarded upstream with a compensation queued on failure, so that
            existing clients keep their URLs

`hopper serve` serves them; /openapi.json describes the API and /docs shows it.
`hopper queues`, `hopper streams` and `hopper tasks` call a running server's API.";

/// `serve --help`'s note on the variables that have no flag.
const SERVE_ENVIRONMENT: &str = "\
Environment:
  HOPPER_ADMIN_SECRET  On a store with no clients, serve creates the client `admin` with the
                       grant `admin`, whose secret this is; when unset, a secret is generated
                       and printed once on standard error. Ignored once the store has clients.
  HOPPER_SECRET_KEY    The base64 of 32 bytes that AWS secret access keys are sealed under;
                       beats `[auth] secret_key`. Without either, SQLite keeps one in a file
                       beside the database (`<database>.secret-key`); PostgreSQL and Redis
                       issue no AWS keys.
  RUST_LOG             Which log lines are written (to standard error), e.g. `warn` or
                       `info,hopper=debug` [default: info]

Flags beat the environment, which beats the configuration file.";

/// `queues --help`: what the commands over the API are held to.
const REMOTE_ABOUT_QUEUES: &str = "\
Look at and manage queues through a running server's HTTP API.

Each command is one API call, made with --user and --secret (HTTP Basic), so it
needs the grants the call needs: `peek` needs consume, `purge` and `redrive` manage.
People get tables and key/value lines; --json prints the server's answer unchanged.
An error answer's text goes to standard error, and the exit status is 1.";

/// The variables of the commands over the API, for their `--help`.
const REMOTE_ENVIRONMENT: &str = "\
Environment:
  HOPPER_URL     The server's base URL, as --url [default: http://127.0.0.1:8080]
  HOPPER_USER    The client id, as --user
  HOPPER_SECRET  The client's secret, as --secret (better than the flag, which other
                 users of the machine may see in the process list)";

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API: queues, streams, tasks, deliveries and the config file's routes.
    #[command(after_help = SERVE_ENVIRONMENT)]
    Serve {
        /// TOML configuration file; flags and environment beat its values.
        #[arg(long, env = "HOPPER_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long, env = "HOPPER_LISTEN")]
        listen: Option<String>,
        /// Store URL: `sqlite://PATH` or `postgres://USER@HOST:PORT/DB[?schema=NAME]`
        /// [default: sqlite://data/hopper.db].
        #[arg(long, env = "HOPPER_STORE")]
        store: Option<String>,
        /// Log format [default: text].
        #[arg(long, env = "HOPPER_LOG_FORMAT", value_enum)]
        log_format: Option<LogFormat>,
    },
    /// Manage clients directly in the store (the server may be running).
    #[command(long_about = "Manage clients directly in the store.\n\n\
                      The store is --store, else HOPPER_STORE, else the configuration file's\n\
                      `store`, else sqlite://data/hopper.db; it must exist already (`serve`\n\
                      creates it). The server may be running: a client added here may call it at\n\
                      once; a change or removal here applies within a second, on PostgreSQL to\n\
                      every node at once (through the admin API, at once everywhere).")]
    Clients {
        /// TOML configuration file, as `serve --config` takes it; only its `store` and
        /// `[auth] secret_key` are used.
        #[arg(long, env = "HOPPER_CONFIG", global = true)]
        config: Option<PathBuf>,
        /// Store URL, as `serve --store` takes it; beats the configuration file's.
        #[arg(long, env = "HOPPER_STORE", global = true)]
        store: Option<String>,
        #[command(subcommand)]
        action: ClientsAction,
    },
    /// Look at and manage queues through a running server's HTTP API.
    #[command(long_about = REMOTE_ABOUT_QUEUES, after_help = REMOTE_ENVIRONMENT)]
    Queues {
        #[command(flatten)]
        remote: hopper::cli::Remote,
        #[command(subcommand)]
        command: hopper::cli::QueuesCommand,
    },
    /// Look at streams through a running server's HTTP API.
    #[command(after_help = REMOTE_ENVIRONMENT)]
    Streams {
        #[command(flatten)]
        remote: hopper::cli::Remote,
        #[command(subcommand)]
        command: hopper::cli::StreamsCommand,
    },
    /// Look at tasks through a running server's HTTP API.
    #[command(after_help = REMOTE_ENVIRONMENT)]
    Tasks {
        #[command(flatten)]
        remote: hopper::cli::Remote,
        #[command(subcommand)]
        command: hopper::cli::TasksCommand,
    },
    /// Measure throughput and latency of the HTTP API against a bare handler.
    #[command(
        long_about = "Measure throughput and latency of the HTTP API against a bare handler.\n\n\
                      Starts `hopper serve` (this binary) on a temporary store, or on --store, and\n\
                      a bare HTTP handler that answers 200 without storage or auth, as child\n\
                      processes; drives both over keep-alive connections; prints throughput and\n\
                      p50/p99/p99.9/max latency side by side. Measure a release build:\n\
                      `cargo build --release`, then `./target/release/hopper bench`."
    )]
    Bench(hopper::bench::BenchArgs),
    /// A bare HTTP handler answering 200 to everything, the benchmark's baseline.
    #[command(hide = true)]
    Bare {
        /// Address to listen on.
        #[arg(long)]
        listen: String,
    },
}

#[derive(Subcommand)]
enum ClientsAction {
    /// Create a client; prints its id and secret as JSON.
    Add {
        /// Client id.
        id: String,
        /// Secret to set; generated when absent.
        #[arg(long)]
        secret: Option<String>,
        /// A grant such as `admin` or `queue:orders:produce`; repeatable.
        #[arg(long = "grant")]
        grants: Vec<String>,
    },
    /// List clients and their grants, one per line: id, a tab, grants separated by commas.
    List,
    /// Delete a client; refused for the last client with the grant `admin`.
    Remove {
        /// Client id.
        id: String,
    },
    /// Add grants to a client; prints it as `list` does.
    Grant {
        /// Client id.
        id: String,
        /// Grants such as `admin` or `queue:orders:produce`.
        #[arg(required = true)]
        grants: Vec<String>,
    },
    /// Take grants from a client; prints it as `list` does. Refused for a grant it does
    /// not hold, and for `admin` from the last client with it.
    Revoke {
        /// Client id.
        id: String,
        /// Grants it holds, written as they were granted.
        #[arg(required = true)]
        grants: Vec<String>,
    },
    /// Give a client a new secret; prints its id and secret as JSON, the only time the
    /// secret is shown. Its old secret and login tokens are refused from then on.
    Rotate {
        /// Client id.
        id: String,
        /// Secret to set; generated when absent.
        #[arg(long)]
        secret: Option<String>,
    },
    /// Issue an AWS access key to a client, for requests signed with AWS Signature
    /// Version 4; prints `{"access_key_id", "secret_access_key"}`, the only time the
    /// secret is shown. Its secret is sealed under HOPPER_SECRET_KEY or `[auth]
    /// secret_key` (on SQLite, without either, the key file beside the database).
    #[command(name = "aws-keys")]
    AwsKeys {
        /// Client id.
        id: String,
    },
}

/// A client as `list` prints it: id, a tab, grants separated by commas.
fn client_line(client: &hopper::domain::ClientRecord) -> String {
    let grants: Vec<String> = client.grants.iter().map(ToString::to_string).collect();
    format!("{}\t{}", client.id, grants.join(","))
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    // Colour codes only for a person at a terminal, never in files or log collectors.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("cannot install the SIGTERM handler");
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = interrupt.await;
}

async fn serve(overrides: Overrides) -> anyhow::Result<()> {
    let config = Config::load(overrides)?;
    init_logging(config.log_format);
    let server = hopper::server::start(config).await?;
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight requests");
    server.shutdown();
    server.wait().await?;
    tracing::info!("stopped");
    Ok(())
}

async fn clients(overrides: Overrides, action: ClientsAction) -> anyhow::Result<()> {
    let config = Config::load(overrides)?;
    let store = hopper::store::open_existing(&config.store).await?;
    let result = async {
        use hopper::auth::clients;
        // Whoever may run this on the store is its operator: the node's own rights.
        let node = hopper::auth::Principal::node();
        match action {
            ClientsAction::Add { id, secret, grants } => {
                let id = ClientId::parse(&id)?;
                let created = clients::create(&node, store.as_ref(), id, secret, &grants).await?;
                println!(
                    "{}",
                    serde_json::json!({ "id": created.id.as_str(), "secret": created.secret })
                );
            }
            ClientsAction::List => {
                for client in clients::list(&node, store.as_ref()).await? {
                    println!("{}", client_line(&client));
                }
            }
            ClientsAction::Remove { id } => {
                clients::delete(&node, store.as_ref(), &ClientId::parse(&id)?).await?;
                println!("removed {id}");
            }
            ClientsAction::Grant { id, grants } => {
                let id = ClientId::parse(&id)?;
                let client = clients::add_grants(&node, store.as_ref(), &id, &grants).await?;
                println!("{}", client_line(&client));
            }
            ClientsAction::Revoke { id, grants } => {
                let id = ClientId::parse(&id)?;
                let client = clients::remove_grants(&node, store.as_ref(), &id, &grants).await?;
                println!("{}", client_line(&client));
            }
            ClientsAction::Rotate { id, secret } => {
                let id = ClientId::parse(&id)?;
                let rotated = clients::rotate(&node, store.as_ref(), &id, secret).await?;
                println!(
                    "{}",
                    serde_json::json!({ "id": rotated.id.as_str(), "secret": rotated.secret })
                );
            }
            ClientsAction::AwsKeys { id } => {
                let id = ClientId::parse(&id)?;
                let secret_key = hopper::auth::SecretKey::for_store(
                    config.auth.secret_key.clone(),
                    &config.store,
                )?;
                let issued =
                    hopper::auth::aws_keys::issue(&node, store.as_ref(), secret_key.as_ref(), &id)
                        .await?;
                println!(
                    "{}",
                    serde_json::json!({
                        "access_key_id": issued.access_key_id.as_str(),
                        "secret_access_key": issued.secret_access_key,
                    })
                );
            }
        }
        anyhow::Ok(())
    }
    .await;
    store.close().await;
    result
}

/// Runs a command over the API; on failure, its reason alone on standard error (the
/// server's own text for a refusal) and exit status 1, with none of anyhow's dressing.
async fn remote_command(
    remote: &hopper::cli::Remote,
    command: hopper::cli::Command,
) -> anyhow::Result<()> {
    if let Err(error) = hopper::cli::run(remote, command).await {
        eprintln!("{error}");
        std::process::exit(1);
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Serve {
            config,
            listen,
            store,
            log_format,
        } => {
            serve(Overrides {
                config,
                listen,
                store,
                log_format,
                admin_secret: std::env::var("HOPPER_ADMIN_SECRET").ok(),
                secret_key: std::env::var("HOPPER_SECRET_KEY").ok(),
            })
            .await
        }
        Command::Clients {
            config,
            store,
            action,
        } => {
            let overrides = Overrides {
                config,
                listen: None,
                store,
                log_format: None,
                admin_secret: None,
                secret_key: std::env::var("HOPPER_SECRET_KEY").ok(),
            };
            clients(overrides, action).await
        }
        Command::Queues { remote, command } => {
            remote_command(&remote, hopper::cli::Command::Queues(command)).await
        }
        Command::Streams { remote, command } => {
            remote_command(&remote, hopper::cli::Command::Streams(command)).await
        }
        Command::Tasks { remote, command } => {
            remote_command(&remote, hopper::cli::Command::Tasks(command)).await
        }
        Command::Bench(args) => hopper::bench::run(args).await,
        Command::Bare { listen } => {
            let listener = tokio::net::TcpListener::bind(&listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            hopper::bench::serve_bare(listener).await
        }
    }
}
