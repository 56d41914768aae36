//! A test OpenTelemetry collector on port 0: takes OTLP/HTTP protobuf exports at `/v1/traces`
//! and keeps every span, with the export's headers and its resource's attributes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use prost::Message;

/// One exported span, flattened.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub name: String,
    /// Lowercase hex, as in `traceparent`.
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    /// The OTLP enum: 2 server, 3 client, 4 producer.
    pub kind: i32,
    pub attributes: Vec<KeyValue>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
    /// The OTLP status code: 0 unset, 1 ok, 2 error.
    pub status: i32,
    /// The resource's `service.name`.
    pub service: String,
}

impl SpanRecord {
    /// A string, or an integer as text, or "" when absent.
    pub fn attr(&self, key: &str) -> String {
        value_text(&self.attributes, key)
    }
}

fn value_text(attributes: &[KeyValue], key: &str) -> String {
    let value = attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref());
    match value {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

#[derive(Default)]
struct Inner {
    spans: Vec<SpanRecord>,
    /// The headers of each export request.
    exports: Vec<HeaderMap>,
}

#[derive(Clone)]
pub struct TestCollector {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl TestCollector {
    pub async fn start() -> TestCollector {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/v1/traces", post(export))
            .with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind collector");
        let addr = listener.local_addr().expect("collector addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        TestCollector { addr, inner }
    }

    /// The base URL, as `traces.otlp_endpoint` takes it.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn spans(&self) -> Vec<SpanRecord> {
        self.inner.lock().expect("collector lock").spans.clone()
    }

    pub fn exports(&self) -> Vec<HeaderMap> {
        self.inner.lock().expect("collector lock").exports.clone()
    }
}

async fn export(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, "not an ExportTraceServiceRequest").into_response();
    };
    let mut inner = inner.lock().expect("collector lock");
    inner.exports.push(headers);
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .as_ref()
            .map(|r| value_text(&r.attributes, "service.name"))
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                inner.spans.push(SpanRecord {
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    kind: span.kind,
                    attributes: span.attributes,
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                        .collect(),
                    status: span.status.map_or(0, |s| s.code),
                    service: service.clone(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse: everything accepted.
    (
        StatusCode::OK,
        [("content-type", "application/x-protobuf")],
        Vec::<u8>::new(),
    )
        .into_response()
}
