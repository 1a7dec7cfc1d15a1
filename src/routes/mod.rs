//! Routes: HTTP endpoints of the config file (`[[routes]]`) mapped onto queues,
//! tasks and upstreams, so existing clients keep their URLs (seeds 000, 001, 002, 003).
//!
//! Every route is validated at start ([`parse`]): one action, known template names,
//! a path that collides neither with another route nor with Hopper's own API. So
//! [`router`] never panics, and a request never meets a configuration error.
//! Handlers authenticate like the API, then call the same services; they never
//! reach the store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{MethodFilter, MethodRouter};
use axum::Router;
use serde::Deserialize;

use crate::api::{ApiError, AppState};
use crate::domain::settings::opt_duration;
use crate::domain::QueueName;

mod describe;
mod forward;
mod path;
mod queues;
mod request;
mod tasks;
mod template;

pub use describe::describe;
pub use forward::Forward;
pub use path::{PathPattern, RESERVED};
pub use template::{Piece, Template, Values};

/// Methods a route may answer. HEAD comes with GET; the rest have no use for a body.
const METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// A `[[routes]]` entry as written in the file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// HTTP method.
    pub method: String,
    /// Path, with `{name}` parameters.
    pub path: String,
    /// Action: push the request body on this queue.
    pub enqueue: Option<String>,
    /// Action: pop the oldest message of this queue.
    pub pop: Option<String>,
    /// Action: count the ready messages of this queue.
    pub count: Option<String>,
    /// Action: create a task on this queue and wait for its result.
    pub task: Option<String>,
    /// Action: call an upstream now and pass its answer through.
    pub forward: Option<ForwardSpec>,
    /// With `forward`: the queue a failed call's compensation message goes to.
    pub compensate: Option<String>,
    /// The answer, a template; each action has a default. On a task route it is the
    /// answer while the task is unfinished; a forward passes the upstream's through.
    pub respond: Option<AnswerSpec>,
    /// With `pop`: the answer when the queue is empty.
    pub empty: Option<AnswerSpec>,
    /// With `task`: how long to wait for the result (capped by `tasks.max_wait`).
    #[serde(default, with = "opt_duration")]
    pub wait: Option<Duration>,
    /// Answer without credentials.
    #[serde(default)]
    pub public: bool,
}

/// `forward = { url, timeout }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSpec {
    /// Upstream URL; `{name}` is replaced by the path parameter `name`, percent-encoded.
    pub url: String,
    /// How long the upstream has to answer, body included.
    #[serde(default, with = "opt_duration")]
    pub timeout: Option<Duration>,
}

/// `respond` or `empty`: `{ status, body }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnswerSpec {
    /// HTTP status; 200 when absent.
    pub status: Option<u16>,
    /// JSON body template; no body when absent.
    pub body: Option<serde_json::Value>,
}

/// What a route does.
#[derive(Debug, Clone)]
pub enum RouteAction {
    /// Push the request body on the queue.
    Enqueue(QueueName),
    /// Pop the oldest ready message of the queue.
    Pop(QueueName),
    /// Count the ready messages of the queue.
    Count(QueueName),
    /// Create a task on the queue, waiting up to `wait` (the tasks' default when `None`).
    Task {
        /// The task queue.
        queue: QueueName,
        /// How long to wait for the result.
        wait: Option<Duration>,
    },
    /// Call the upstream and pass its answer through.
    Forward(Forward),
}

impl RouteAction {
    fn describe(&self) -> &'static str {
        match self {
            RouteAction::Enqueue(_) => "an enqueue",
            RouteAction::Pop(_) => "a pop",
            RouteAction::Count(_) => "a count",
            RouteAction::Task { .. } => "a task",
            RouteAction::Forward(_) => "a forward",
        }
    }

    /// The template names the action's answer offers, besides path parameters.
    fn offers(&self) -> &'static [&'static str] {
        match self {
            RouteAction::Enqueue(_) => &["id"],
            RouteAction::Pop(_) => &["id", "message"],
            RouteAction::Count(_) => &["count"],
            RouteAction::Task { .. } => &["task_id"],
            RouteAction::Forward(_) => &[],
        }
    }
}

/// A validated answer: status and body template.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status.
    pub status: StatusCode,
    /// The body; `None` answers without one.
    pub body: Option<Template>,
}

/// A validated route.
#[derive(Debug, Clone)]
pub struct Route {
    /// The entry it came from.
    pub spec: RouteSpec,
    /// The line of the file it starts on.
    pub line: usize,
    /// The method it answers.
    pub method: Method,
    /// Its path.
    pub path: PathPattern,
    /// What it does.
    pub action: RouteAction,
    /// `respond`, compiled.
    pub respond: Option<Answer>,
    /// `empty`, compiled (pop only).
    pub empty: Option<Answer>,
    /// Answers without credentials.
    pub public: bool,
}

/// Validates the file's routes; an error names the line and the reason.
pub fn parse(specs: Vec<toml::Spanned<RouteSpec>>, text: &str) -> anyhow::Result<Vec<Route>> {
    let mut routes: Vec<Route> = Vec::with_capacity(specs.len());
    // (method, shape) -> line of the first route there.
    let mut taken: HashMap<(Method, String), usize> = HashMap::new();
    for spanned in specs {
        let line = crate::config::line_of(text, spanned.span().start);
        let spec = spanned.into_inner();
        let route = validate(spec.clone(), line).map_err(|reason| {
            anyhow::anyhow!("line {line}: route {} {}: {reason}", spec.method, spec.path)
        })?;
        let key = (route.method.clone(), route.path.shape());
        if let Some(first) = taken.insert(key, line) {
            anyhow::bail!(
                "line {line}: route {} {} collides with the route on line {first}: same method and path",
                spec.method,
                spec.path
            );
        }
        routes.push(route);
    }
    Ok(routes)
}

fn validate(spec: RouteSpec, line: usize) -> Result<Route, String> {
    let method = parse_method(&spec.method)?;
    let path = PathPattern::parse(&spec.path)?;
    if let Some(reserved) = path.reserved_prefix() {
        return Err(format!(
            "paths at or under {reserved} belong to Hopper's own API"
        ));
    }
    let action = parse_action(&spec, &path)?;
    let only_with = |field: &str, present: bool, allowed: bool, with: &str| {
        if present && !allowed {
            Err(format!("{field} applies only to {with} routes"))
        } else {
            Ok(())
        }
    };
    only_with(
        "wait",
        spec.wait.is_some(),
        matches!(action, RouteAction::Task { .. }),
        "task",
    )?;
    only_with(
        "compensate",
        spec.compensate.is_some(),
        matches!(action, RouteAction::Forward(_)),
        "forward",
    )?;
    only_with(
        "empty",
        spec.empty.is_some(),
        matches!(action, RouteAction::Pop(_)),
        "pop",
    )?;
    if spec.respond.is_some() && matches!(action, RouteAction::Forward(_)) {
        return Err(
            "respond does not apply to forward routes: they pass the upstream's answer through"
                .into(),
        );
    }
    let params: Vec<&str> = path.params().collect();
    if let Some(shadowed) = params.iter().find(|p| action.offers().contains(p)) {
        return Err(format!(
            "path parameter {{{shadowed}}} has the name of a value {} route offers to templates; rename it",
            action.describe()
        ));
    }
    let respond = spec
        .respond
        .as_ref()
        .map(|answer| compile_answer("respond", answer, action.offers(), &params, &action))
        .transpose()?;
    // A pop that finds nothing has no message to show.
    let empty = spec
        .empty
        .as_ref()
        .map(|answer| compile_answer("empty", answer, &[], &params, &action))
        .transpose()?;
    Ok(Route {
        line,
        method,
        path,
        action,
        respond,
        empty,
        public: spec.public,
        spec,
    })
}

fn parse_method(raw: &str) -> Result<Method, String> {
    let upper = raw.trim().to_ascii_uppercase();
    if !METHODS.contains(&upper.as_str()) {
        return Err(format!(
            "method {raw:?} is not one of {}",
            METHODS.join(", ")
        ));
    }
    Method::from_bytes(upper.as_bytes()).map_err(|e| e.to_string())
}

fn parse_action(spec: &RouteSpec, path: &PathPattern) -> Result<RouteAction, String> {
    let named = [
        ("enqueue", spec.enqueue.is_some()),
        ("pop", spec.pop.is_some()),
        ("count", spec.count.is_some()),
        ("task", spec.task.is_some()),
        ("forward", spec.forward.is_some()),
    ];
    let present: Vec<&str> = named
        .iter()
        .filter(|(_, present)| *present)
        .map(|(name, _)| *name)
        .collect();
    match present.as_slice() {
        [] => return Err("needs one action: enqueue, pop, count, task or forward".into()),
        [_] => {}
        several => {
            return Err(format!(
                "has {} actions ({}); a route does exactly one",
                several.len(),
                several.join(", ")
            ))
        }
    }
    let queue = |name: &str, raw: &Option<String>| -> Result<Option<QueueName>, String> {
        raw.as_deref()
            .map(|raw| QueueName::parse(raw).map_err(|e| format!("{name}: {e}")))
            .transpose()
    };
    if let Some(queue) = queue("enqueue", &spec.enqueue)? {
        return Ok(RouteAction::Enqueue(queue));
    }
    if let Some(queue) = queue("pop", &spec.pop)? {
        return Ok(RouteAction::Pop(queue));
    }
    if let Some(queue) = queue("count", &spec.count)? {
        return Ok(RouteAction::Count(queue));
    }
    if let Some(queue) = queue("task", &spec.task)? {
        return Ok(RouteAction::Task {
            queue,
            wait: spec.wait,
        });
    }
    let forward = spec
        .forward
        .as_ref()
        .ok_or("needs one action: enqueue, pop, count, task or forward")?;
    let compensate = queue("compensate", &spec.compensate)?;
    let params: Vec<&str> = path.params().collect();
    Forward::compile(forward, compensate, &params).map(RouteAction::Forward)
}

fn compile_answer(
    field: &str,
    spec: &AnswerSpec,
    offers: &[&str],
    params: &[&str],
    action: &RouteAction,
) -> Result<Answer, String> {
    let status = match spec.status {
        None => StatusCode::OK,
        Some(code) => StatusCode::from_u16(code)
            .ok()
            .filter(|s| (200..=599).contains(&s.as_u16()))
            .ok_or_else(|| {
                format!("{field}.status {code} is not an HTTP status from 200 to 599")
            })?,
    };
    let body = spec
        .body
        .as_ref()
        .map(|body| Template::compile(body).map_err(|e| format!("{field}.body: {e}")))
        .transpose()?;
    if body.is_some() && matches!(status, StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED) {
        return Err(format!(
            "{field}.status {} answers without a body; remove {field}.body",
            status.as_u16()
        ));
    }
    if let Some(template) = &body {
        let offered = |name: &&str| offers.contains(name) || params.contains(name);
        if let Some(unknown) = template.names().into_iter().find(|n| !offered(n)) {
            let mut known: Vec<String> = offers.iter().map(|n| (*n).to_owned()).collect();
            known.extend(params.iter().map(|p| format!("{p} (path)")));
            let known = if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            };
            return Err(format!(
                "{field}.body names {{{{{unknown}}}}}, which {} route{} does not offer (it offers: {known})",
                action.describe(),
                if field == "empty" { "'s empty answer" } else { "" },
            ));
        }
    }
    Ok(Answer { status, body })
}

/// The routes as an axum router, merged into the API's. Routes with the same path
/// shape share one axum entry, one handler per method; [`parse`] made sure no two
/// share a method and none touches the API's paths, so building this cannot panic.
pub fn router(routes: &[Route]) -> Router<AppState> {
    let mut by_shape: Vec<(String, Vec<&Route>)> = Vec::new();
    for route in routes {
        let shape = route.path.shape();
        match by_shape.iter_mut().find(|(s, _)| *s == shape) {
            Some((_, group)) => group.push(route),
            None => by_shape.push((shape, vec![route])),
        }
    }
    by_shape
        .into_iter()
        .fold(Router::new(), |router, (shape, group)| {
            let methods = group
                .into_iter()
                .fold(MethodRouter::new(), |methods, route| {
                    let filter = MethodFilter::try_from(route.method.clone())
                        .expect("parse accepts only methods axum can route");
                    let route = Arc::new(route.clone());
                    methods.on(
                        filter,
                        move |State(state): State<AppState>, request: Request| async move {
                            match request::serve(&route, &state, request).await {
                                Ok(response) => response,
                                Err(error) => error.into_response(),
                            }
                        },
                    )
                })
                .fallback(method_not_allowed);
            router.route(&shape, methods)
        })
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> anyhow::Result<Vec<Route>> {
        #[derive(Deserialize)]
        struct File {
            routes: Vec<toml::Spanned<RouteSpec>>,
        }
        let file: File = toml::from_str(text)?;
        parse(file.routes, text)
    }

    #[test]
    fn routes_start_on_their_header_line() {
        let routes = parse_text(
            "# routes\n\n[[routes]]\nmethod = \"POST\"\npath = \"/a\"\nenqueue = \"a\"\n\n[[routes]]\nmethod = \"get\"\npath = \"/a\"\ncount = \"a\"\n",
        )
        .unwrap();
        assert_eq!(routes[0].line, 3);
        assert_eq!(routes[1].line, 8);
        assert_eq!(routes[1].method, Method::GET);
        // Two methods on one path share an axum entry: building must not panic.
        let _ = router(&routes);
    }
}
