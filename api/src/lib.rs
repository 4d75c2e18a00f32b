//! `api`: emtrack's HTTP surface, on two listeners.
//!
//! - The operators' listener ([`ops_router`]): `/healthz`, `/readyz`,
//!   `/metrics`. No credentials; nothing about subjects.
//! - The officer API ([`officer_router`]): identities, roles and scope,
//!   alerts, subjects, tracks, the audit log, and its OpenAPI document at
//!   `/v1/openapi.json`. Every endpoint but `POST /v1/login` and the
//!   document needs a bearer token, and every such request is audited.
//!
//! It sees only handles: the metrics registry, readiness probes, the
//! database pool, and the alert service's [`AlertHandle`]; never the
//! engine, the pipeline or their state.
//!
//! # Layout
//! - `identity`: roles, the authenticated caller, passwords (argon2id),
//!   tokens (stored as SHA-256), [`identity::authenticate`].
//! - `scope`: what each role may see and do, decided in one place; the
//!   extractors that answer 404 for anything out of scope.
//! - `audit`: the guard around every authenticated endpoint (authenticate,
//!   scope, audit row) and `GET /v1/audit`.
//! - `accounts`: users and credentials, for the CLI and the endpoints
//!   (login, logout, tokens, users).
//! - `alerts`: list, one alert, acknowledge, resolve. `stream`: the SSE
//!   stream, resumable with `Last-Event-ID`.
//! - `subjects`: the caseload overview, one subject, track playback.
//! - `agency`: agency configuration (admin): global category zones
//!   (versioned like orders) and webhooks.
//! - `enrolment`: enrol a subject, fit, swap or remove its bracelet (and
//!   its reporting interval), transfer it to another officer; the device
//!   inventory (register, retire).
//! - `orders`: a subject's orders at any time, and every change to them
//!   (`order_versions`).
//! - `near`: who was near a point during a period (the `fixes_near` grid
//!   index), within scope or, with a reason, over every subject.
//! - `evidence`: a subject's record for a period as CSV or GeoJSON, with
//!   its SHA-256 in a header and in the audit log.
//! - `params`, `time`, `error`, `limits`: request decoding, times in
//!   answers, the error format, and the limits (login throttle, deadline,
//!   stream cap). `serve`: the listener loop (header-read timeout, peer
//!   address). `health`: the operators' endpoints.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod accounts;
mod agency;
mod alerts;
mod audit;
mod credentials;
mod enrolment;
mod error;
mod evidence;
mod health;
pub mod identity;
mod limits;
mod near;
pub mod orders;
mod params;
pub mod scope;
mod serve;
mod stream;
mod subjects;
mod time;

pub use error::{ApiError, ErrorBody};
pub use serve::serve;
pub use time::Time;

use alert_service::AlertHandle;
use axum::extract::DefaultBodyLimit;
use axum::middleware::{from_fn, from_fn_with_state};
use axum::routing::get;
use prometheus::{IntCounterVec, Opts, Registry};
use sqlx::PgPool;
use std::sync::Arc;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// The largest request body taken, in bytes.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A readiness check: true when the part it names is working.
pub type Probe = Arc<dyn Fn() -> bool + Send + Sync>;

/// A readiness note: a condition an operator must see that does not make
/// the service unready (`None` while there is nothing to say).
pub type Note = Arc<dyn Fn() -> Option<String> + Send + Sync>;

/// What the operators' endpoints read.
#[derive(Clone)]
pub struct HttpState {
    /// Every metric of the service.
    pub metrics: prometheus::Registry,
    /// Named readiness checks (`/readyz` lists each, then the database).
    pub probes: Vec<(&'static str, Probe)>,
    /// Named notes (`/readyz` lists each that has something to say, as
    /// `name warning: …`, after the probes).
    pub notes: Vec<(&'static str, Note)>,
    /// The database, for `/readyz`.
    pub pool: PgPool,
    /// This node's role: `/readyz` says it first; a standby is not ready.
    pub role: Role,
}

/// A node's role among the `emtrack run`s of one database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It holds the service lease: it consumes, judges, alerts and serves
    /// the officer API.
    Active,
    /// It waits to take the lease over; it serves only the operators'
    /// listener.
    Standby,
}

impl Role {
    /// `active` or `standby`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Active => "active",
            Role::Standby => "standby",
        }
    }
}

impl std::fmt::Debug for HttpState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpState")
            .field(
                "probes",
                &self.probes.iter().map(|p| p.0).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The operators' router: health, readiness, metrics.
pub fn ops_router(state: HttpState) -> axum::Router {
    axum::Router::new()
        .route("/metrics", get(health::metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(health::readyz))
        .with_state(state)
}

/// The officer API's settings.
#[derive(Clone, Copy, Debug)]
pub struct ApiConfig {
    /// How long a login session lasts, in seconds.
    pub session_s: i64,
    /// Alert streams open at once, at most.
    pub max_streams: usize,
}

/// The officer API's counters.
#[derive(Clone, Debug)]
pub(crate) struct ApiMetrics {
    refused: IntCounterVec,
}

impl ApiMetrics {
    fn new(r: &Registry) -> ApiMetrics {
        let refused = IntCounterVec::new(
            Opts::new(
                "emtrack_api_auth_refused_total",
                "Officer API requests refused at authentication, by reason",
            ),
            &["reason"],
        )
        .expect("a valid metric");
        for reason in ["no_credential", "bad_credential", "bad_password"] {
            refused.with_label_values(&[reason]);
        }
        // A second registration (a second router on one registry) keeps the first.
        let _ = r.register(Box::new(refused.clone()));
        ApiMetrics { refused }
    }

    pub(crate) fn refused(&self, reason: &str) {
        self.refused.with_label_values(&[reason]).inc();
    }
}

/// What the officer API's handlers read.
#[derive(Clone, Debug)]
pub struct ApiState {
    pool: PgPool,
    alerts: AlertHandle,
    session_s: i64,
    throttle: Arc<limits::LoginThrottle>,
    streams: Arc<tokio::sync::Semaphore>,
    /// Password verifications running at once (argon2id), at most.
    verifying: Arc<tokio::sync::Semaphore>,
    metrics: ApiMetrics,
    orders: Arc<dyn orders::OrderCheck>,
    /// The broker's admin side, for device credentials; none leaves them
    /// to `emtrack device`.
    broker: Option<Arc<identities::Broker>>,
    /// Seals webhook secrets before they are stored; none stores them as
    /// given.
    seal: Option<Arc<link::SealKey>>,
}

impl std::fmt::Debug for dyn orders::OrderCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OrderCheck")
    }
}

impl ApiState {
    /// The state of an officer API on `pool`, acting through `alerts`,
    /// checking orders with `orders`, counting on `registry`.
    pub fn new(
        pool: PgPool,
        alerts: AlertHandle,
        orders: Arc<dyn orders::OrderCheck>,
        config: ApiConfig,
        registry: &Registry,
    ) -> Self {
        ApiState {
            orders,
            pool,
            alerts,
            session_s: config.session_s,
            throttle: Arc::default(),
            streams: Arc::new(tokio::sync::Semaphore::new(config.max_streams)),
            verifying: Arc::new(tokio::sync::Semaphore::new(8)),
            metrics: ApiMetrics::new(registry),
            broker: None,
            seal: None,
        }
    }

    /// Seals webhook secrets with `seal` before they are stored.
    pub fn with_seal(mut self, seal: Option<Arc<link::SealKey>>) -> Self {
        self.seal = seal;
        self
    }

    /// Issues, rotates and revokes device credentials through `broker`.
    pub fn with_broker(mut self, broker: Option<Arc<identities::Broker>>) -> Self {
        self.broker = broker;
        self
    }
}

/// The OpenAPI document's frame; the paths come from the handlers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "emtrack officer API",
        description = "Alerts, caseloads and tracks of people under electronic monitoring. \
            Every endpoint but login needs `Authorization: Bearer <token>`; a resource outside \
            the caller's scope answers 404."
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "identity", description = "Login, tokens, users"),
        (name = "alerts", description = "The alert queue and officers' actions"),
        (name = "subjects", description = "Caseloads, enrolment, positions, tracks, orders"),
        (name = "devices", description = "The device inventory"),
        (name = "agency", description = "Agency configuration: category zones, webhooks"),
        (name = "audit", description = "The audit log")
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let c = doc.components.get_or_insert_with(Default::default);
        c.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The error answers any operation can give, added (once the routes are
/// in) to every operation that does not describe them itself, all with
/// [`ErrorBody`].
struct ErrorAnswers;

impl utoipa::Modify for ErrorAnswers {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{ContentBuilder, Ref, ResponseBuilder};
        const ANSWERS: [(&str, &str); 8] = [
            ("400", "The request is malformed (a parameter, the body)"),
            ("401", "No valid credential"),
            ("403", "The caller's role may not use this endpoint"),
            ("404", "Not found, or outside the caller's scope"),
            ("413", "The body is over 64 KiB"),
            ("422", "The change cannot be made"),
            ("429", "Too many failed logins; see Retry-After"),
            (
                "503",
                "The database or the alert service is unavailable, or the request timed out",
            ),
        ];
        for item in doc.paths.paths.values_mut() {
            let ops = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in ops.into_iter().flatten() {
                for (code, text) in ANSWERS {
                    op.responses
                        .responses
                        .entry(code.to_owned())
                        .or_insert_with(|| {
                            ResponseBuilder::new()
                                .description(text)
                                .content(
                                    "application/json",
                                    ContentBuilder::new()
                                        .schema(Some(Ref::from_schema_name("ErrorBody")))
                                        .build(),
                                )
                                .build()
                                .into()
                        });
                }
            }
        }
    }
}

/// The endpoints that need a credential (the guard is added by [`routes`]).
fn guarded() -> OpenApiRouter<ApiState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(accounts::me))
        .routes(routes!(accounts::logout))
        .routes(routes!(accounts::tokens, accounts::new_token))
        .routes(routes!(accounts::revoke))
        .routes(routes!(accounts::users, accounts::create_user))
        .routes(routes!(accounts::disable_user))
        .routes(routes!(alerts::list))
        .routes(routes!(alerts::one))
        .routes(routes!(alerts::acknowledge))
        .routes(routes!(alerts::resolve))
        .routes(routes!(subjects::list, enrolment::enrol))
        .routes(routes!(enrolment::transfer))
        .routes(routes!(enrolment::fit, enrolment::remove))
        .routes(routes!(enrolment::devices, enrolment::register))
        .routes(routes!(enrolment::retire))
        .routes(routes!(credentials::rotate))
        .routes(routes!(agency::zones, agency::create_zone))
        .routes(routes!(agency::replace_zone, agency::remove_zone))
        .routes(routes!(agency::webhooks, agency::add_webhook))
        .routes(routes!(agency::change_webhook))
        .routes(routes!(subjects::one))
        .routes(routes!(subjects::track))
        .routes(routes!(orders::at, orders::create))
        .routes(routes!(orders::update, orders::lift))
        .routes(routes!(orders::history))
        .routes(routes!(evidence::csv))
        .routes(routes!(evidence::geojson))
        .routes(routes!(near::near))
        .routes(routes!(audit::list))
        .route_layer(from_fn(limits::deadline))
        // The stream has no deadline: it stays open.
        .routes(routes!(stream::stream))
}

/// Login: the one endpoint without a credential.
fn open() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .routes(routes!(accounts::login))
        .route_layer(from_fn(limits::deadline))
}

/// The officer API's routes, every guarded one behind [`audit::guard`],
/// and their OpenAPI document.
fn routes(state: &ApiState) -> (axum::Router<ApiState>, utoipa::openapi::OpenApi) {
    let (router, mut doc) = guarded()
        .route_layer(from_fn_with_state(state.clone(), audit::guard))
        .merge(open())
        .split_for_parts();
    utoipa::Modify::modify(&ErrorAnswers, &mut doc);
    (router, doc)
}

/// The OpenAPI 3 document of the officer API (what `/v1/openapi.json`
/// serves), generated from the handlers' annotations.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = guarded().merge(open()).split_for_parts().1;
    utoipa::Modify::modify(&ErrorAnswers, &mut doc);
    doc
}

/// The officer API's router.
pub fn officer_router(state: ApiState) -> axum::Router {
    let (router, doc) = routes(&state);
    let doc = Arc::new(doc);
    router
        .route(
            "/v1/openapi.json",
            get(move || {
                let doc = doc.clone();
                async move { axum::Json((*doc).clone()) }
            }),
        )
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .fallback(|| async { ApiError::NotFound })
        .with_state(state)
}
