//! The API described: `/openapi.json` (OpenAPI 3.1, generated from the handlers'
//! own declarations) and `/docs` (Swagger UI, compiled into the binary). The
//! conventions every endpoint shares (error bodies, `X-Request-Id`, the statuses any
//! authenticated call or any body can meet) are added here once, in [`finish`],
//! rather than restated on each handler.

use std::sync::Arc;

use axum::extract::Path as RawPath;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::json;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{HttpMethod, Operation, Parameter, ParameterBuilder, ParameterIn};
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Type};
use utoipa::openapi::security::{
    ApiKey, ApiKeyValue, Http, HttpAuthScheme, HttpBuilder, SecurityScheme,
};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, OpenApi, Ref, RefOr, Required, Response as ApiResponse,
};
use utoipa::ToResponse;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::Config;

use super::{ApiError, AppState};
use crate::auth::MIN_SECRET_LEN;
use crate::domain::names::NAME_PATTERN;
use crate::domain::queues::MAX_COUNT;

/// A receipt as `receive` hands it out: `<message id>.<lease token, 16 hex digits>`.
pub const RECEIPT_PATTERN: &str = r"^[0-9]{1,18}\.[0-9a-fA-F]{16}$";
/// A task id: a hyphenated UUID, any case.
pub const TASK_ID_PATTERN: &str =
    r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$";
/// A message group: visible ASCII, no spaces (SQS's `MessageGroupId`).
pub const GROUP_PATTERN: &str = r"^[\x21-\x7E]+$";
/// A header value Hopper keeps (an idempotency key, a producer or consumer id):
/// visible ASCII, inner spaces and tabs allowed (HTTP strips them at the ends).
pub const PARTY_PATTERN: &str = r"^[\x21-\x7E]([\t\x20-\x7E]*[\x21-\x7E])?$";
/// A stream owner in a JSON body: not all whitespace (as Rust's `char::is_whitespace`
/// counts it), no NUL.
pub const OWNER_PATTERN: &str = "^[^\\x00]*[^\\x00\\t\\n\\x0B\\f\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000][^\\x00]*$";
/// A chosen secret: no control characters.
pub const SECRET_PATTERN: &str = r"^[^\x00-\x1F\x7F-\x9F]*$";
/// A grant: `admin`, `<kind>:<name, or a glob with *>:<action or *>`, or `route:<path or glob>:call`.
pub const GRANT_PATTERN: &str = r"^(admin|(queue|stream|task):(\*|[A-Za-z0-9._*-]*[A-Za-z0-9_*-][A-Za-z0-9._*-]{0,127}):(produce|consume|manage|\*)|route:/[!-9;-~]{0,1000}:(call|\*))$";

/// A string schema with `pattern`, within `min..=max` characters.
fn pattern_schema(pattern: &str, min: usize, max: Option<usize>, description: &str) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(pattern))
        .min_length(Some(min))
        .max_length(max)
        .description(Some(description))
        .build()
}

/// A queue, stream or client name.
pub fn name_schema() -> Object {
    pattern_schema(
        NAME_PATTERN,
        1,
        Some(128),
        "1 to 128 of A-Z a-z 0-9 . _ -, not only dots",
    )
}

/// A receipt.
pub fn receipt_schema() -> Object {
    pattern_schema(
        RECEIPT_PATTERN,
        1,
        None,
        "A receipt, as `receive` handed it out",
    )
}

/// 1 to 1000 receipts.
pub fn receipts_schema() -> Array {
    ArrayBuilder::new()
        .items(receipt_schema())
        .min_items(Some(1))
        .max_items(Some(MAX_COUNT as usize))
        .build()
}

/// A header value Hopper keeps.
pub fn party_schema() -> Object {
    pattern_schema(
        PARTY_PATTERN,
        1,
        Some(256),
        "Visible ASCII, 1 to 256 characters",
    )
}

/// A message group.
pub fn group_schema() -> Object {
    pattern_schema(
        GROUP_PATTERN,
        1,
        Some(crate::domain::queues::MAX_GROUP_LEN),
        "Visible ASCII, 1 to 128 characters",
    )
}

/// A stream owner.
pub fn owner_schema() -> Object {
    pattern_schema(
        OWNER_PATTERN,
        1,
        Some(256),
        "1 to 256 characters, not only whitespace, no NUL",
    )
}

/// A task id.
pub fn task_id_schema() -> Object {
    pattern_schema(TASK_ID_PATTERN, 36, Some(36), "A task id (a UUID)")
}

/// An AWS access key id.
pub fn access_key_id_schema() -> Object {
    pattern_schema(
        crate::domain::clients::ACCESS_KEY_ID_PATTERN,
        16,
        Some(128),
        "An AWS access key id: 16 to 128 of A-Z 0-9 (Hopper issues `HOPR` and 16 more)",
    )
}

/// A chosen secret.
pub fn secret_schema() -> Object {
    pattern_schema(
        SECRET_PATTERN,
        MIN_SECRET_LEN,
        None,
        "At least 12 characters, none of them a control character; generated when absent",
    )
}

/// Grants.
pub fn grants_schema() -> Array {
    ArrayBuilder::new()
        .items(pattern_schema(
            GRANT_PATTERN,
            1,
            None,
            "`admin`, `<queue|stream|task>:<name or glob>:<produce|consume|manage|*>` (in a glob, `*` matches any run of name characters: `orders-*`, `*.eu`, `*`), or `route:<path or glob>:call` for a forward route without a compensation queue",
        ))
        .build()
}

/// A header the handlers read, for the description: a header's absence is no
/// `null`, so an optional one is simply not required (the derive would make its
/// schema nullable).
pub fn header_param(
    name: &str,
    required: bool,
    description: &str,
    schema: impl Into<RefOr<utoipa::openapi::schema::Schema>>,
) -> Parameter {
    ParameterBuilder::new()
        .name(name)
        .parameter_in(ParameterIn::Header)
        .required(if required {
            Required::True
        } else {
            Required::False
        })
        .description(Some(description))
        .schema(Some(schema))
        .build()
}

/// A number of seconds from 0 to `max`.
pub fn seconds_param_schema(max: std::time::Duration) -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Number)
        .minimum(Some(0))
        .maximum(Some(max.as_secs_f64()))
        .build()
}

/// The finished description, as served by `/openapi.json`.
#[derive(Clone)]
pub struct Document(pub Arc<str>);

/// Security schemes, the API's title, and its tags; the routes add their paths.
pub fn base() -> OpenApi {
    #[derive(utoipa::OpenApi)]
    #[openapi(
        info(
            title = "Hopper",
            description = "An asynchronous HTTP front door: durable queues, event streams with consumer offsets, tasks (request-reply) and delivery to upstream HTTP APIs.\n\nEvery error body is a JSON string, `\"<Reason> - <detail>\"` or `\"<Reason>\"`. Every response carries `X-Request-Id`.",
        ),
        tags(
            (name = "queues", description = "At-least-once work queues with competing consumers"),
            (name = "tasks", description = "Asynchronous request-reply over a queue"),
            (name = "streams", description = "Append-only event logs with consumer offsets, answering as the event server Hopper replaces did"),
            (name = "auth", description = "Logging in for a token, and the caller's identity"),
            (name = "admin", description = "Clients and stream owners; admins only"),
            (name = "health", description = "Liveness and the store's health; no credentials"),
            (name = "docs", description = "This description"),
            (name = "routes", description = "Endpoints of the configuration file's [[routes]]"),
        ),
        security(("basic" = []), ("token" = []), ("bearer" = [], "api_client_id" = [])),
    )]
    struct Base;
    let mut api = <Base as utoipa::OpenApi>::openapi();
    let components = api.components.get_or_insert_with(Default::default);
    components.security_schemes.insert(
        "basic".into(),
        SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)).into(),
    );
    components.security_schemes.insert(
        "token".into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .bearer_format("JWT")
                .description(Some(
                    "A token from `POST /api/v1/auth/login`, without `API-Client-Id`",
                ))
                .build(),
        )
        .into(),
    );
    components.security_schemes.insert(
        "bearer".into(),
        SecurityScheme::Http(
            HttpBuilder::new()
                .scheme(HttpAuthScheme::Bearer)
                .description(Some("A client's secret, with its id in `API-Client-Id`"))
                .build(),
        )
        .into(),
    );
    components.security_schemes.insert(
        "api_client_id".into(),
        SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
            "API-Client-Id",
            "The client id that goes with `Authorization: Bearer <secret>`",
        )))
        .into(),
    );
    api
}

/// The routes of the description itself.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(openapi))
        .routes(routes!(swagger_ui))
        .routes(routes!(swagger_file))
}

/// `GET /openapi.json`: this description.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    operation_id = "openapi",
    summary = "This API's description (OpenAPI 3.1)",
    security(()),
    responses((status = 200, description = "The description", content_type = "application/json", body = Object))
)]
pub async fn openapi(Extension(Document(json)): Extension<Document>) -> Response {
    super::json_response(StatusCode::OK, json.to_string())
}

/// `GET /docs`: Swagger UI over `/openapi.json`.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    operation_id = "docs",
    summary = "This description in a browser (Swagger UI), with Authorize and Try it out",
    security(()),
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub async fn swagger_ui() -> Response {
    match swagger_asset("index.html") {
        Some((bytes, _)) => {
            let page = String::from_utf8_lossy(&bytes)
                .replace("<title>Swagger UI</title>", "<title>Hopper API</title>")
                // The page links its files relatively; they live under /docs/.
                .replacen("<head>", "<head>\n    <base href=\"/docs/\" />", 1);
            html_or_file(page.into_bytes(), "text/html; charset=utf-8".into())
        }
        None => ApiError::NotFound(String::new()).into_response(),
    }
}

/// `GET /docs/{file}`: Swagger UI's scripts, styles and icons.
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    operation_id = "docsFile",
    summary = "A file of the Swagger UI page",
    security(()),
    params(("file" = String, Path, description = "The file's name, e.g. `swagger-ui.css`")),
    responses(
        (status = 200, description = "The file", content_type = "*/*", body = String),
        (status = 404, response = NotFound),
    )
)]
pub async fn swagger_file(RawPath(file): RawPath<String>) -> Response {
    match swagger_asset(&file) {
        Some((bytes, content_type)) => html_or_file(bytes, content_type),
        None => ApiError::NotFound(format!("file {file}")).into_response(),
    }
}

fn html_or_file(bytes: Vec<u8>, content_type: String) -> Response {
    let mut response = (StatusCode::OK, bytes).into_response();
    if let Ok(value) = HeaderValue::from_str(&content_type) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn swagger_asset(file: &str) -> Option<(Vec<u8>, String)> {
    let config = Config::new(["/openapi.json"])
        .try_it_out_enabled(true)
        .persist_authorization(true)
        .display_request_duration(true);
    let served = utoipa_swagger_ui::serve(file, Arc::new(config)).ok()??;
    // Compressed files would need a Content-Encoding; the vendored ones are not.
    (!served.gzpipped).then(|| (served.bytes.into_owned(), served.content_type))
}

/// An error response: the seed-004 JSON string, with `X-Request-Id` and `extra` headers.
fn error_response(description: &str, example: &str, extra: &[(&str, &str)]) -> ApiResponse {
    let content = ContentBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .example(Some(json!(example)))
        .build();
    let mut response = ResponseBuilder::new()
        .description(description)
        .content("application/json", content)
        .header_ref(
            "X-Request-Id",
            Ref::new("#/components/headers/X-Request-Id"),
        );
    for (name, description) in extra {
        response = response.header(*name, text_header(description));
    }
    response.build()
}

fn text_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(Some(ObjectBuilder::new().schema_type(Type::String)))
        .description(Some(description))
        .build()
}

/// Defines an error response type: its component name, description and example.
macro_rules! error_responses {
    ($($(#[$doc:meta])* $name:ident => ($description:literal, $example:literal $(, $header:literal : $header_doc:literal)*);)*) => {
        $(
            $(#[$doc])*
            pub struct $name;

            impl<'s> ToResponse<'s> for $name {
                fn response() -> (&'s str, RefOr<ApiResponse>) {
                    (
                        stringify!($name),
                        error_response($description, $example, &[$(($header, $header_doc)),*]).into(),
                    )
                }
            }
        )*

        /// Every error response, for the components.
        fn error_components() -> Vec<(&'static str, RefOr<ApiResponse>)> {
            vec![$(<$name as ToResponse>::response()),*]
        }
    };
}

error_responses! {
    /// 400.
    BadRequest => ("A malformed request: the detail says what and where", "Bad Request - count must be between 1 and 1000");
    /// 401.
    Unauthorized => ("Missing or wrong credentials", "Unauthorized", "WWW-Authenticate": "The schemes accepted");
    /// 403.
    Forbidden => ("Valid credentials without the grant", "Forbidden - needs grant queue:orders:produce");
    /// 404.
    NotFound => ("No such queue, stream, event, task or client", "Not Found - queue orders");
    /// 409.
    Conflict => ("It exists already, or a receipt no longer holds its lease", "Conflict - client 12345 exists");
    /// 413.
    PayloadTooLarge => ("The body is over the configured limit", "Payload Too Large - body exceeds 1048576 bytes");
    /// 415.
    UnsupportedMediaType => ("The body is not of the content type the endpoint reads", "Unsupported Media Type - expected Content-Type: application/json, got \"text/plain\"");
    /// 423.
    Locked => ("The stream belongs to another producer: one writer per stream", "Locked - Second writers not allowed");
    /// 429.
    TooManyRequests => ("Too many failed credential checks for this client id or from this address, lately: refused, right or wrong, until the time given", "Too Many Requests - too many failed credential checks; retry in 42 s", "Retry-After": "Seconds before the lock-out ends");
    /// 500.
    InternalServerError => ("A failure of Hopper; the details are in its log, under the request id", "Internal Server Error - storage failure");
    /// 503.
    ServiceUnavailable => ("The store is unreachable or the server is busy or stopping: retry later", "Service Unavailable - store", "Retry-After": "Seconds before retrying");
    /// 504.
    GatewayTimeout => ("The store did not confirm the write: it may or may not be stored; check before retrying", "Gateway Timeout - outcome unknown");
}

/// A link of the description: from the answers `statuses` of operation `from` to
/// operation `target`, named `name`, with `parameters` as `(name, runtime expression)`.
struct Link {
    from: &'static str,
    statuses: &'static [&'static str],
    name: &'static str,
    target: &'static str,
    parameters: &'static [(&'static str, &'static str)],
}

/// Where answers lead.
/// Besides telling readers how calls chain, links keep generated clients from
/// guessing: the task create and read share their path parameter's name (one path,
/// two meanings), and a guess would feed a queue name to a read that wants an id.
const LINKS: &[Link] = &[
    Link {
        from: "createTask",
        statuses: &["200", "202"],
        name: "GetTask",
        target: "getTask",
        parameters: &[("queue_or_id", "$response.body#/id")],
    },
    Link {
        from: "createTask",
        statuses: &["200", "202"],
        name: "CompleteTask",
        target: "completeTask",
        parameters: &[("id", "$response.body#/id")],
    },
    Link {
        from: "createTask",
        statuses: &["200", "202"],
        name: "FailTask",
        target: "failTask",
        parameters: &[("id", "$response.body#/id")],
    },
    Link {
        from: "getTask",
        statuses: &["200"],
        name: "CompleteTask",
        target: "completeTask",
        parameters: &[("id", "$response.body#/id")],
    },
    Link {
        from: "createClient",
        statuses: &["201"],
        name: "DeleteClient",
        target: "deleteClient",
        parameters: &[("id", "$response.body#/id")],
    },
    Link {
        from: "produceEvent",
        statuses: &["200"],
        name: "AcknowledgeEvent",
        target: "acknowledgeEvent",
        parameters: &[
            ("stream", "$request.path.stream"),
            ("event", "$response.body"),
        ],
    },
    Link {
        from: "produceEvent",
        statuses: &["200"],
        name: "GetStream",
        target: "getStream",
        parameters: &[("stream", "$request.path.stream")],
    },
    Link {
        from: "push",
        statuses: &["201"],
        name: "Receive",
        target: "receive",
        parameters: &[("queue", "$request.path.queue")],
    },
    Link {
        from: "push",
        statuses: &["201"],
        name: "GetQueue",
        target: "getQueue",
        parameters: &[("queue", "$request.path.queue")],
    },
    Link {
        from: "configureQueue",
        statuses: &["200", "201"],
        name: "Push",
        target: "push",
        parameters: &[("queue", "$request.path.queue")],
    },
];

fn add_links(operation: &mut Operation) {
    let Some(id) = operation.operation_id.clone() else {
        return;
    };
    for link in LINKS.iter().filter(|link| link.from == id) {
        for status in link.statuses {
            let Some(RefOr::T(response)) = operation.responses.responses.get_mut(*status) else {
                continue;
            };
            let built = link
                .parameters
                .iter()
                .fold(
                    LinkBuilder::new().operation_id(link.target),
                    |built, (name, value)| built.parameter(*name, *value),
                )
                .build();
            response.links.insert(link.name.to_owned(), RefOr::T(built));
        }
    }
}

/// Applies the conventions every operation shares, then registers the components
/// they refer to. Call it once every path (config routes included) is in `api`.
pub fn finish(api: &mut OpenApi) {
    for item in api.paths.paths.values_mut() {
        let methods = [
            (HttpMethod::Get, &mut item.get),
            (HttpMethod::Put, &mut item.put),
            (HttpMethod::Post, &mut item.post),
            (HttpMethod::Delete, &mut item.delete),
            (HttpMethod::Patch, &mut item.patch),
            (HttpMethod::Head, &mut item.head),
        ];
        for (method, operation) in methods {
            if let Some(operation) = operation {
                apply_conventions(method, operation);
                add_links(operation);
            }
        }
    }
    let components = api
        .components
        .get_or_insert_with(|| ComponentsBuilder::new().build());
    for (name, response) in error_components() {
        components.responses.insert(name.to_owned(), response);
    }
    components.headers.insert(
        "X-Request-Id".to_owned(),
        RefOr::T(text_header(
            "This request's id, for the log: the client's own when it sent one of 1 to 128 visible ASCII characters",
        )),
    );
}

fn apply_conventions(method: HttpMethod, operation: &mut Operation) {
    // OpenAPI requires every path parameter; a schema given by function loses the
    // `required` its field would have implied.
    for parameter in operation.parameters.iter_mut().flatten() {
        if let RefOr::T(parameter) = parameter {
            if parameter.parameter_in == ParameterIn::Path {
                parameter.required = Required::True;
            }
        }
    }
    let public = operation
        .security
        .as_ref()
        .is_some_and(|requirements| requirements.iter().all(|r| *r == Default::default()));
    let has_body = operation.request_body.is_some();
    let has_input = has_body
        || operation
            .parameters
            .as_ref()
            .is_some_and(|params| !params.is_empty());
    let mut add = |status: &str, name: &str, applies: bool| {
        if applies {
            operation
                .responses
                .responses
                .entry(status.to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(name)));
        }
    };
    add("400", "BadRequest", has_input);
    add("401", "Unauthorized", !public);
    add("403", "Forbidden", !public);
    add("429", "TooManyRequests", !public);
    add("413", "PayloadTooLarge", has_body);
    add("415", "UnsupportedMediaType", has_body);
    add("500", "InternalServerError", true);
    add("503", "ServiceUnavailable", true);
    add("504", "GatewayTimeout", method != HttpMethod::Get);
    for response in operation.responses.responses.values_mut() {
        if let RefOr::T(response) = response {
            response
                .headers
                .entry("X-Request-Id".to_owned())
                .or_insert_with(|| RefOr::Ref(Ref::new("#/components/headers/X-Request-Id")));
        }
    }
}
