//! OpenTelemetry traces (`[traces]`): a span for each ingest request, one for each accepted
//! event, and one for each attempt, exported over OTLP/HTTP when `traces.otlp_endpoint` is set.
//!
//! An event's spans form one trace whose id is the event id itself (`evt_<ULID>`: a ULID is
//! 128 bits, as a trace id is), and whose root span id is derived from it. So an attempt made
//! an hour later, by another node, or after a restart finds its trace without the store keeping
//! anything: `hookd.event` is the root and every `hookd.attempt` its child. The ingest request's
//! span (`POST /v1/events`) continues the caller's `traceparent` when it sends one, and is
//! linked to each event's span, and each event's span back to it, the way OpenTelemetry's
//! messaging conventions link a batch to its messages.
//!
//! Sampling is by trace id (`sample_ratio`), so an event's spans are kept or dropped together on
//! every node. Off (no endpoint), nothing is built: each hook below is one branch on an
//! `Option`.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::{
    Link, Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{IdGenerator, RandomIdGenerator, Sampler, SdkTracer};
use sha2::Digest;

use crate::config::TracesConfig;
use crate::store::{Delivery, Next};

/// The span names, for dashboards and queries.
pub const INGEST_SPAN: &str = "POST /v1/events";
pub const EVENT_SPAN: &str = "hookd.event";
pub const ATTEMPT_SPAN: &str = "hookd.attempt";

/// How long one export to the collector may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// The exporter and what the spans need; shared by the API and the scheduler.
pub struct Traces {
    exporting: Option<Exporting>,
    /// Send `traceparent` with each attempt.
    traceparent: bool,
}

struct Exporting {
    provider: opentelemetry_sdk::trace::SdkTracerProvider,
    tracer: SdkTracer,
}

impl std::fmt::Debug for Traces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traces")
            .field("exporting", &self.exporting.is_some())
            .field("traceparent", &self.traceparent)
            .finish()
    }
}

thread_local! {
    /// The ids the next span built on this thread takes: an event's span has ids derived from
    /// the event id, which the SDK's builder has no other way to be given.
    static NEXT_IDS: Cell<Option<(TraceId, SpanId)>> = const { Cell::new(None) };
}

/// Random ids, unless [`NEXT_IDS`] holds the ones to use.
#[derive(Debug)]
struct Ids(RandomIdGenerator);

impl IdGenerator for Ids {
    fn new_trace_id(&self) -> TraceId {
        match NEXT_IDS.with(Cell::get) {
            Some((trace, _)) => trace,
            None => self.0.new_trace_id(),
        }
    }

    fn new_span_id(&self) -> SpanId {
        match NEXT_IDS.with(Cell::get) {
            Some((_, span)) => span,
            None => self.0.new_span_id(),
        }
    }
}

/// The trace of an event: its ULID when the id is `evt_<ULID>`, else a hash of the id (operator
/// events' ids, say); and the id of its root span, derived from the id too.
pub fn event_trace(event_id: &str) -> (TraceId, SpanId) {
    let digest = sha2::Sha256::digest(event_id.as_bytes());
    let trace = match crate::store::parse_event_id(event_id) {
        Some(ulid) if ulid.0 != 0 => TraceId::from_bytes(ulid.0.to_be_bytes()),
        _ => {
            let mut bytes = [0u8; 16];
            bytes.copy_from_slice(&digest[..16]);
            bytes[15] |= 1; // never the invalid all-zero id
            TraceId::from_bytes(bytes)
        }
    };
    let mut span = [0u8; 8];
    span.copy_from_slice(&digest[16..24]);
    span[7] |= 1;
    (trace, SpanId::from_bytes(span))
}

/// The one `traceparent` header of a request, for the propagator.
struct TraceparentHeader<'a>(Option<&'a str>);

impl Extractor for TraceparentHeader<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        if key.eq_ignore_ascii_case("traceparent") {
            self.0
        } else {
            None
        }
    }

    fn keys(&self) -> Vec<&str> {
        vec!["traceparent"]
    }
}

/// The W3C `traceparent` of a span context.
fn traceparent(context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    )
}

impl Traces {
    /// No spans, no header.
    pub fn off() -> Traces {
        Traces {
            exporting: None,
            traceparent: false,
        }
    }

    /// Builds the exporter `config` names, if any. Spans are exported in batches from a thread
    /// of their own; an unreachable collector costs dropped spans, never a delivery.
    pub fn start(config: &TracesConfig) -> anyhow::Result<Traces> {
        let Some(endpoint) = &config.endpoint else {
            return Ok(Traces {
                exporting: None,
                traceparent: config.traceparent,
            });
        };
        // The blocking client runs a runtime of its own, which must not be created (or dropped)
        // on one of tokio's threads; the environment's proxies are not used, as for deliveries.
        let client = std::thread::spawn(|| {
            reqwest::blocking::Client::builder()
                .no_proxy()
                .timeout(EXPORT_TIMEOUT)
                .build()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("building the OTLP client panicked"))??;
        let headers: HashMap<String, String> = config
            .headers
            .iter()
            .map(|(name, value)| (name.clone(), value.expose().to_string()))
            .collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint.as_str())
            .with_timeout(EXPORT_TIMEOUT)
            .with_headers(headers)
            .build()?;
        let resource = opentelemetry_sdk::Resource::builder()
            .with_service_name(config.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::TraceIdRatioBased(config.sample_ratio))
            .with_id_generator(Ids(RandomIdGenerator::default()))
            .with_resource(resource)
            .build();
        let tracer = provider.tracer("hookd");
        Ok(Traces {
            exporting: Some(Exporting { provider, tracer }),
            traceparent: config.traceparent,
        })
    }

    pub fn exporting(&self) -> bool {
        self.exporting.is_some()
    }

    /// Exports what is buffered and stops the exporter; blocks up to the export timeout.
    pub fn shutdown(&self) {
        if let Some(e) = &self.exporting {
            if let Err(error) = e.provider.shutdown_with_timeout(EXPORT_TIMEOUT) {
                tracing::warn!(%error, "could not export the last spans");
            }
        }
    }

    /// Starts the span of one ingest request, continuing the caller's `traceparent`.
    pub fn ingest(&self, traceparent: Option<&str>) -> IngestSpan {
        let Some(e) = &self.exporting else {
            return IngestSpan(None);
        };
        let parent = TraceContextPropagator::new().extract(&TraceparentHeader(traceparent));
        let span = e
            .tracer
            .span_builder(INGEST_SPAN)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", "POST"),
                KeyValue::new("http.route", "/v1/events"),
            ])
            .start_with_context(&e.tracer, &parent);
        IngestSpan(Some((span, e.tracer.clone())))
    }

    /// Starts the span of one attempt, a child of its event's span; its `traceparent` is what
    /// the request carries when `traces.traceparent` is on.
    pub fn attempt(&self, delivery: &Delivery, number: u32, url: &reqwest::Url) -> AttemptSpan {
        let (trace, event_span) = match (&self.exporting, self.traceparent) {
            (None, false) => return AttemptSpan::default(),
            _ => event_trace(&delivery.event_id),
        };
        let Some(e) = &self.exporting else {
            // Not exporting: the header still names the event's trace, unsampled.
            let span = RandomIdGenerator::default().new_span_id();
            let context =
                SpanContext::new(trace, span, TraceFlags::default(), false, TraceState::NONE);
            return AttemptSpan {
                span: None,
                traceparent: Some(traceparent(&context)),
            };
        };
        let parent = Context::new().with_remote_span_context(SpanContext::new(
            trace,
            event_span,
            TraceFlags::SAMPLED,
            true,
            TraceState::NONE,
        ));
        let mut attributes = vec![
            KeyValue::new("hookd.event_id", delivery.event_id.clone()),
            KeyValue::new("hookd.delivery_id", delivery.id.clone()),
            KeyValue::new("hookd.event_type", delivery.event_type.clone()),
            KeyValue::new("hookd.subscription", delivery.subscription.clone()),
            KeyValue::new("hookd.attempt", i64::from(number)),
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("url.scheme", url.scheme().to_string()),
        ];
        if let Some(owner) = &delivery.owner {
            attributes.push(KeyValue::new("hookd.owner", owner.clone()));
        }
        // The host and port only: a URL's path or query may hold a receiver's token.
        if let Some(host) = url.host_str() {
            attributes.push(KeyValue::new("server.address", host.to_string()));
        }
        if let Some(port) = url.port_or_known_default() {
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let span = e
            .tracer
            .span_builder(ATTEMPT_SPAN)
            .with_kind(SpanKind::Client)
            .with_attributes(attributes)
            .start_with_context(&e.tracer, &parent);
        let header = self.traceparent.then(|| traceparent(span.span_context()));
        AttemptSpan {
            span: Some(span),
            traceparent: header,
        }
    }
}

/// The span of one ingest request while it runs.
pub struct IngestSpan(Option<(opentelemetry_sdk::trace::Span, SdkTracer)>);

/// What [`IngestSpan::events`] records of each accepted event.
pub struct AcceptedEvent<'a> {
    pub event_id: &'a str,
    pub event_type: &'a str,
    /// The owner the event named, if any (`hookd.owner`).
    pub owner: Option<&'a str>,
    pub deliveries: usize,
    pub duplicate: bool,
}

impl IngestSpan {
    /// Whether spans are made: what [`IngestSpan::events`] would record need not be gathered
    /// otherwise.
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Records the accepted events: a `hookd.event` span for each new one, linked both ways
    /// with the request's span (a repeat has its span from when it was first accepted).
    pub fn events(&mut self, events: &[AcceptedEvent<'_>]) {
        let Some((span, tracer)) = &mut self.0 else {
            return;
        };
        span.set_attribute(KeyValue::new("hookd.events", events.len() as i64));
        if let [one] = events {
            span.set_attribute(KeyValue::new("hookd.event_id", one.event_id.to_string()));
        }
        let request = span.span_context().clone();
        for event in events {
            let (trace, root) = event_trace(event.event_id);
            let context = if event.duplicate {
                SpanContext::new(trace, root, TraceFlags::SAMPLED, false, TraceState::NONE)
            } else {
                NEXT_IDS.with(|ids| ids.set(Some((trace, root))));
                let mut attributes = vec![
                    KeyValue::new("hookd.event_id", event.event_id.to_string()),
                    KeyValue::new("hookd.event_type", event.event_type.to_string()),
                    KeyValue::new("hookd.deliveries", event.deliveries as i64),
                ];
                if let Some(owner) = event.owner {
                    attributes.push(KeyValue::new("hookd.owner", owner.to_string()));
                }
                let mut event_span = tracer
                    .span_builder(EVENT_SPAN)
                    .with_kind(SpanKind::Producer)
                    .with_links(vec![Link::with_context(request.clone())])
                    .with_attributes(attributes)
                    .start_with_context(tracer, &Context::new());
                NEXT_IDS.with(|ids| ids.set(None));
                let context = event_span.span_context().clone();
                event_span.end();
                context
            };
            if context.is_sampled() {
                span.add_link(
                    context,
                    vec![KeyValue::new("hookd.event_id", event.event_id.to_string())],
                );
            }
        }
    }

    /// Ends the span with the response's status.
    pub fn end(self, status: u16) {
        let Some((mut span, _)) = self.0 else {
            return;
        };
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status),
        ));
        if status >= 500 {
            span.set_status(Status::error(format!("HTTP {status}")));
        }
        span.end();
    }
}

/// The span of one attempt while it runs, and the `traceparent` its request carries.
#[derive(Default)]
pub struct AttemptSpan {
    span: Option<opentelemetry_sdk::trace::Span>,
    pub traceparent: Option<String>,
}

impl AttemptSpan {
    /// Ends the span with what happened and what follows.
    pub fn end(self, result: &crate::delivery::AttemptResult, next: Next) {
        let Some(mut span) = self.span else {
            return;
        };
        if let Some(status) = result.status_code {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
        }
        span.set_attribute(KeyValue::new("hookd.outcome", result.outcome.as_str()));
        let next = match next {
            Next::Delivered => "delivered",
            Next::RetryAt(_) => "retry",
            Next::Dead => "dead",
        };
        span.set_attribute(KeyValue::new("hookd.next", next));
        if result.outcome != crate::store::Outcome::Success {
            span.set_attribute(KeyValue::new("error.type", result.outcome.as_str()));
            span.set_status(Status::error(result.error.clone().unwrap_or_default()));
        }
        span.end_with_timestamp(SystemTime::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_id_is_its_trace_id() {
        let ulid = ulid::Ulid::from_parts(1_700_000_000_000, 42);
        let id = crate::store::event_id_string(ulid);
        let (trace, span) = event_trace(&id);
        assert_eq!(trace.to_string(), format!("{:032x}", ulid.0));
        assert_eq!(event_trace(&id), (trace, span), "derived, not random");
        let (other, other_span) = event_trace("op_something");
        assert_ne!(other, TraceId::INVALID);
        assert_ne!(other_span, SpanId::INVALID);
        assert_ne!(other_span, span);
    }

    #[test]
    fn off_makes_no_span_and_no_header() {
        let traces = Traces::off();
        let delivery = Delivery {
            id: "dlv_x".into(),
            event_id: crate::store::event_id_string(ulid::Ulid::from_parts(1, 2)),
            event_type: "job.completed".into(),
            subscription: "a".into(),
            bucket: "a".into(),
            adhoc: None,
            state: crate::store::DeliveryState::InFlight,
            attempts: 0,
            created_ms: 1,
            due_ms: None,
            finished_ms: None,
            last_error: None,
            owner: None,
        };
        let url = reqwest::Url::parse("http://127.0.0.1:1/").unwrap();
        let span = traces.attempt(&delivery, 1, &url);
        assert!(span.span.is_none() && span.traceparent.is_none());
        let header_only = Traces {
            exporting: None,
            traceparent: true,
        };
        let header = header_only.attempt(&delivery, 1, &url).traceparent.unwrap();
        let (trace, _) = event_trace(&delivery.event_id);
        assert!(
            header.starts_with(&format!("00-{trace}-")) && header.ends_with("-00"),
            "{header}"
        );
        assert_eq!(header.len(), 55);
    }
}
