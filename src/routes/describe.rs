//! Routes in the API description: each `[[routes]]` entry becomes an operation of
//! `/openapi.json` with its path parameters, its body and the answers its action
//! and templates can give, so clients of a legacy URL find it described beside
//! Hopper's own API.

use std::collections::HashMap;

use axum::http::Method;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{
    HttpMethod, Operation, OperationBuilder, ParameterBuilder, ParameterIn, PathItem,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::SecurityRequirement;
use utoipa::openapi::{ContentBuilder, OpenApi, Required};

use super::{Answer, PathPattern, Route, RouteAction};

/// Adds an operation for each route to `api`. Routes whose paths differ only in
/// parameter names share one path of the description, named as the first one names it.
pub fn describe(api: &mut OpenApi, routes: &[Route]) {
    let mut paths: HashMap<String, String> = HashMap::new();
    for route in routes {
        let key = paths
            .entry(route.path.shape())
            .or_insert_with(|| route.spec.path.clone())
            .clone();
        let names: Vec<String> = PathPattern::parse(&key)
            .map(|pattern| pattern.params().map(str::to_owned).collect())
            .unwrap_or_default();
        let operation = operation(route, &names);
        let item = api
            .paths
            .paths
            .entry(key)
            .or_insert_with(|| PathItem::new(http_method(&route.method), operation.clone()));
        let slot = match route.method {
            Method::GET => &mut item.get,
            Method::PUT => &mut item.put,
            Method::PATCH => &mut item.patch,
            Method::DELETE => &mut item.delete,
            _ => &mut item.post,
        };
        *slot = Some(operation);
    }
}

fn http_method(method: &Method) -> HttpMethod {
    match *method {
        Method::GET => HttpMethod::Get,
        Method::PUT => HttpMethod::Put,
        Method::PATCH => HttpMethod::Patch,
        Method::DELETE => HttpMethod::Delete,
        _ => HttpMethod::Post,
    }
}

fn any_json() -> ContentBuilder {
    ContentBuilder::new().schema(Some(ObjectBuilder::new()))
}

fn operation(route: &Route, param_names: &[String]) -> Operation {
    let (summary, body) = match &route.action {
        RouteAction::Enqueue(queue) => (
            format!("Push the body on queue {queue}"),
            Some(Required::True),
        ),
        RouteAction::Pop(queue) => (format!("Pop the oldest message of queue {queue}"), None),
        RouteAction::Count(queue) => (format!("Count the ready messages of queue {queue}"), None),
        RouteAction::Task { queue, .. } => (
            format!(
                "Create a task on queue {queue} with the body as payload, and wait for its result"
            ),
            Some(Required::False),
        ),
        RouteAction::Forward(_) => (
            "Call the upstream and pass its answer through".to_owned(),
            Some(Required::False),
        ),
    };
    let mut operation = OperationBuilder::new()
        .tag("routes")
        .operation_id(Some(format!(
            "route{}{}",
            route.method.as_str().to_ascii_lowercase(),
            route
                .spec
                .path
                .split(|c: char| !c.is_ascii_alphanumeric())
                .map(|part| {
                    let mut chars = part.chars();
                    chars.next().map_or(String::new(), |first| {
                        first.to_ascii_uppercase().to_string() + chars.as_str()
                    })
                })
                .collect::<String>()
        )))
        .summary(Some(summary))
        .description(Some(format!(
            "Route of the configuration file (line {}).",
            route.line
        )));
    for name in param_names {
        operation = operation.parameter(
            ParameterBuilder::new()
                .name(name)
                .parameter_in(ParameterIn::Path)
                .required(Required::True)
                .schema(Some(ObjectBuilder::new().schema_type(Type::String))),
        );
    }
    if let Some(required) = body {
        operation = operation.request_body(Some(
            RequestBodyBuilder::new()
                .description(Some(
                    "JSON as sent, or any other text (kept as a JSON string)",
                ))
                .content("application/json", any_json().build())
                .content(
                    "text/plain",
                    ContentBuilder::new()
                        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                        .build(),
                )
                .required(Some(required))
                .build(),
        ));
    }
    if route.public {
        operation = operation.securities(Some([SecurityRequirement::default()]));
    }
    for (status, response) in responses(route) {
        operation = operation.response(status, response);
    }
    operation.build()
}

/// The answer an [`Answer`] gives: its status, with a JSON body when it has one.
fn templated(answer: &Answer, description: &str) -> (String, Response) {
    let mut response = ResponseBuilder::new().description(description);
    if answer.body.is_some() {
        response = response.content("application/json", any_json().build());
    }
    (answer.status.as_u16().to_string(), response.build())
}

fn json_answer(status: u16, description: &str) -> (String, Response) {
    (
        status.to_string(),
        ResponseBuilder::new()
            .description(description)
            .content("application/json", any_json().build())
            .build(),
    )
}

fn responses(route: &Route) -> Vec<(String, Response)> {
    let respond = route.respond.as_ref();
    match &route.action {
        RouteAction::Enqueue(_) => vec![respond.map_or_else(
            || json_answer(202, "Queued: `{\"id\"}`"),
            |answer| templated(answer, "Queued"),
        )],
        RouteAction::Pop(_) => vec![
            respond.map_or_else(
                || json_answer(200, "The oldest message's body"),
                |answer| templated(answer, "The oldest message"),
            ),
            route.empty.as_ref().map_or_else(
                || {
                    (
                        "204".to_owned(),
                        ResponseBuilder::new()
                            .description("The queue is empty")
                            .build(),
                    )
                },
                |answer| templated(answer, "The queue is empty"),
            ),
        ],
        RouteAction::Count(_) => vec![respond.map_or_else(
            || json_answer(200, "`{\"count\"}`"),
            |answer| templated(answer, "The count"),
        )],
        RouteAction::Task { .. } => {
            let location = HeaderBuilder::new()
                .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
                .description(Some("Where the task is: `/api/v1/tasks/{id}`"))
                .build();
            let (status, pending) = respond.map_or_else(
                || json_answer(202, "Not finished within the wait: the task"),
                |answer| templated(answer, "Not finished within the wait"),
            );
            let mut pending = pending;
            pending.headers.insert("Location".into(), location.into());
            vec![
                (
                    "default".to_owned(),
                    ResponseBuilder::new()
                        .description("Finished within the wait: the upstream's answer when a delivery finished it, else the task (200)")
                        .content("*/*", any_json().build())
                        .build(),
                ),
                (status, pending),
            ]
        }
        RouteAction::Forward(_) => vec![
            (
                "default".to_owned(),
                ResponseBuilder::new()
                    .description("The upstream's answer, passed through")
                    .content("*/*", any_json().build())
                    .build(),
            ),
            json_answer(
                502,
                "The upstream failed (no connection, a 5xx, an answer over the size limit)",
            ),
            json_answer(504, "The upstream did not answer in time"),
        ],
    }
}
