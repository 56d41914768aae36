//! `hookd listen`: a customer's development loop. With a portal link from the provider, it
//! connects out to hookd (server-sent events over the API listener, through `HTTPS_PROXY` when
//! set), receives a copy of each of that owner's events, signed with a session secret, POSTs it
//! to a local URL and reports the answer back, so that it shows in the portal.
//!
//! It reconnects with backoff ([`backoff`]) when hookd restarts or the network drops, saying so
//! in one line; on reconnect hookd replays what it kept of the events missed, or says how many
//! it could not. An expired or invalid link ends it with exit code 1; bad usage is 2.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use eventsource_stream::Eventsource;
use futures_util::StreamExt;
use serde_json::{json, Value};

/// The longest wait between two reconnects.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long the local receiver may take to answer.
const LOCAL_TIMEOUT: Duration = Duration::from_secs(30);

// No doc comment: the `listen` variant's own is the command's help.
#[derive(Args)]
pub struct ListenArgs {
    /// The portal link the provider gave you (https://…/ui/portal/<token>).
    #[arg(long)]
    pub link: String,
    /// Where to POST each event, e.g. http://localhost:3000/webhook/abstrakt.
    #[arg(long, value_name = "URL")]
    pub forward_to: Option<String>,
    /// Only these event types, comma-separated (job.completed,job.failed); default all.
    #[arg(long, value_delimiter = ',')]
    pub events: Vec<String>,
    /// Sign with this secret instead of a new one (so a receiver keeps its configured secret).
    #[arg(long, env = "HOOKD_LISTEN_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// Print each event's body too.
    #[arg(long)]
    pub print_json: bool,
    /// Send the owner's test event of this type (job.completed) through its listen sessions:
    /// this one once connected, or, without --forward-to, those open elsewhere, then exit.
    #[arg(long, value_name = "EVENT_TYPE")]
    pub trigger: Option<String>,
}

/// The wait before reconnect attempt `failures + 1`: 250 ms doubling up to [`MAX_BACKOFF`].
pub fn backoff(failures: u32) -> Duration {
    Duration::from_millis(250u64.saturating_mul(1u64 << failures.min(16))).min(MAX_BACKOFF)
}

/// A portal link split into hookd's base URL and the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub base: String,
    pub token: String,
}

impl Link {
    pub fn parse(link: &str) -> Result<Link, String> {
        let (base, rest) = link.trim().split_once("/ui/portal/").ok_or_else(|| {
            "--link is not a portal link: it looks like https://hooks.example/ui/portal/<token>"
                .to_string()
        })?;
        let token = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let parsed = url::Url::parse(base).map_err(|e| format!("--link: {e}"))?;
        if token.is_empty() || !matches!(parsed.scheme(), "http" | "https") {
            return Err("--link is not a portal link: it has no token after /ui/portal/".into());
        }
        Ok(Link {
            base: base.trim_end_matches('/').to_string(),
            token: token.to_string(),
        })
    }
}

/// How one connection ended.
enum Ended {
    /// For good: print this and exit 1.
    Fatal(String),
    /// Try again after the backoff, for this reason.
    Again(String),
}

/// What the CLI keeps across reconnects.
#[derive(Default)]
struct Progress {
    session: Option<String>,
    secret: Option<String>,
    /// The last event forwarded; before the first, an id of the time the session opened, so
    /// that a restart of hookd replays whatever came after that.
    last_event_id: Option<String>,
    /// The owner hookd named when the session opened, for the Ready line.
    owner: Option<String>,
    /// Whether a stream has been open: the Ready line is printed once, when the first stream
    /// says `ready`, so that it means events will arrive.
    ready: bool,
    failures: u32,
}

struct Listener {
    args: ListenArgs,
    link: Link,
    api: reqwest::Client,
    local: reqwest::Client,
    progress: Arc<Mutex<Progress>>,
}

pub fn run(args: ListenArgs) -> ExitCode {
    let link = match Link::parse(&args.link) {
        Ok(link) => link,
        Err(message) => return usage(&message),
    };
    if args.forward_to.is_none() && args.trigger.is_none() {
        return usage("--forward-to is required (the local URL to POST each event to)");
    }
    if let Some(url) = &args.forward_to {
        if let Err(e) = url::Url::parse(url) {
            return usage(&format!("--forward-to {url:?}: {e}"));
        }
    }
    let clients = (
        // The environment's proxy (HTTPS_PROXY) applies to hookd, never to the local receiver.
        reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build(),
        reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(LOCAL_TIMEOUT)
            .build(),
    );
    let (Ok(api), Ok(local)) = clients else {
        return usage("cannot make an HTTP client");
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return usage(&format!("cannot start a runtime: {e}")),
    };
    let progress = Arc::new(Mutex::new(Progress {
        secret: args.secret.clone(),
        ..Progress::default()
    }));
    let listener = Listener {
        args,
        link,
        api,
        local,
        progress,
    };
    runtime.block_on(listener.until_stopped())
}

fn usage(message: &str) -> ExitCode {
    eprintln!("hookd listen: {message}");
    ExitCode::from(2)
}

impl Listener {
    /// Runs until Ctrl-C (exit 0, the session closed) or a fatal answer (exit 1).
    async fn until_stopped(&self) -> ExitCode {
        if self.args.forward_to.is_none() {
            return self.trigger_elsewhere().await;
        }
        tokio::select! {
            code = self.reconnecting() => code,
            _ = tokio::signal::ctrl_c() => {
                self.close().await;
                println!("Session closed.");
                ExitCode::SUCCESS
            }
        }
    }

    async fn reconnecting(&self) -> ExitCode {
        loop {
            match self.connect().await {
                Ended::Fatal(message) => {
                    eprintln!("hookd listen: {message}");
                    return ExitCode::from(1);
                }
                Ended::Again(reason) => {
                    let (failures, ready) = {
                        let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
                        p.failures = p.failures.saturating_add(1);
                        (p.failures - 1, p.ready)
                    };
                    // One line an outage: the first failure since the stream was last ready.
                    if failures == 0 && ready {
                        println!("Lost the connection to hookd ({reason}); reconnecting…");
                    } else if failures == 0 {
                        println!(
                            "Cannot reach hookd at {} ({reason}); retrying…",
                            self.link.base
                        );
                    }
                    tokio::time::sleep(backoff(failures)).await;
                }
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.link.base)
    }

    async fn post(&self, path: &str, body: Value) -> Result<(u16, Value), String> {
        let response = self
            .api
            .post(self.url(path))
            .bearer_auth(&self.link.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(without_url)?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap_or_default();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    /// Opens (or resumes) the session, then streams it until it ends.
    async fn connect(&self) -> Ended {
        let request = {
            let p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            json!({
                "events": self.args.events,
                "secret": p.secret,
                "session": p.session,
                "last_event_id": p.last_event_id,
            })
        };
        let (status, answer) = match self.post("/v1/listen/sessions", request).await {
            Ok(answered) => answered,
            Err(e) => return Ended::Again(e),
        };
        let message = answer["error"].as_str().unwrap_or("no message").to_string();
        match status {
            200 | 201 => {}
            500.. => return Ended::Again(format!("hookd answered {status}: {message}")),
            _ => return Ended::Fatal(message),
        }
        let Some(id) = answer["session"].as_str().map(str::to_string) else {
            return Ended::Again("hookd's answer named no session".into());
        };
        self.opened(&id, &answer).await;
        self.stream(&id).await
    }

    /// Says what opening the session gave: what a reconnect replays or missed (the Ready line
    /// waits for the stream, [`Listener::stream_ready`]).
    async fn opened(&self, id: &str, answer: &Value) {
        let reconnect = {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            p.session = Some(id.to_string());
            p.secret = answer["secret"].as_str().map(str::to_string);
            p.owner = answer["owner"].as_str().map(str::to_string);
            if p.last_event_id.is_none() {
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
                p.last_event_id = Some(format!("evt_{}", ulid::Ulid::from_parts(now_ms, 0)));
            }
            p.ready
        };
        if !reconnect {
            return;
        }
        let replayed = answer["replayed"].as_u64().unwrap_or(0);
        let missed = answer["missed"].as_u64().unwrap_or(0);
        if replayed > 0 {
            println!("{replayed} events accepted while disconnected follow.");
        }
        if missed > 0 {
            println!("{missed} events were missed while disconnected (more than hookd keeps for a reconnect).");
        }
    }

    /// The stream said `ready`: the first time, the Ready line (and `--trigger`'s test
    /// event); after an outage, "Reconnected.".
    async fn stream_ready(&self) {
        let (first, was_failing, owner, secret) = {
            let mut p = self.progress.lock().unwrap_or_else(|e| e.into_inner());
            let failures = std::mem::take(&mut p.failures);
            let first = !std::mem::replace(&mut p.ready, true);
            (first, failures > 0, p.owner.clone(), p.secret.clone())
        };
        if !first {
            if was_failing {
                println!("Reconnected.");
            }
            return;
        }
        println!(
            "Ready. Forwarding {}'s events to {}. Signing secret: {} (Ctrl-C to quit)",
            owner.as_deref().unwrap_or("?"),
            self.args.forward_to.as_deref().unwrap_or_default(),
            secret.as_deref().unwrap_or("?"),
        );
        if let Some(event_type) = &self.args.trigger {
            if let Err(e) = self.trigger(event_type).await {
                eprintln!("hookd listen: the trigger failed: {e}");
            }
        }
    }

    async fn trigger(&self, event_type: &str) -> Result<u64, String> {
        let (status, answer) = self
            .post("/v1/listen/trigger", json!({ "event_type": event_type }))
            .await?;
        if status != 202 {
            return Err(answer["error"].as_str().unwrap_or("refused").to_string());
        }
        Ok(answer["sessions"].as_u64().unwrap_or(0))
    }

    /// `--trigger` without `--forward-to`: through the sessions open elsewhere.
    async fn trigger_elsewhere(&self) -> ExitCode {
        let event_type = self.args.trigger.clone().unwrap_or_default();
        match self.trigger(&event_type).await {
            Ok(0) => {
                eprintln!("hookd listen: no listen session is open for this link's owner: start `hookd listen --forward-to` first");
                ExitCode::from(1)
            }
            Ok(n) => {
                println!("Sent a test {event_type} through {n} listen session(s).");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hookd listen: {e}");
                ExitCode::from(1)
            }
        }
    }

    /// Streams session `id` until the stream ends.
    async fn stream(&self, id: &str) -> Ended {
        let response = self
            .api
            .get(self.url(&format!("/v1/listen/sessions/{id}/events")))
            .bearer_auth(&self.link.token)
            .header("Accept", "text/event-stream")
            .send()
            .await;
        let response = match response {
            Ok(r) if r.status().is_success() => r,
            Ok(r) if r.status().as_u16() == 404 => {
                self.progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .session = None;
                return Ended::Again("the session ended".into());
            }
            Ok(r) => return Ended::Again(format!("hookd answered {}", r.status().as_u16())),
            Err(e) => return Ended::Again(without_url(e)),
        };
        let chunks = futures_util::stream::unfold(response, |mut r| async move {
            match r.chunk().await {
                Ok(Some(chunk)) => Some((Ok(chunk), r)),
                Ok(None) => None,
                Err(e) => Some((Err(e), r)),
            }
        });
        let mut events = Box::pin(chunks.eventsource());
        while let Some(event) = events.next().await {
            let Ok(event) = event else {
                return Ended::Again("the stream broke".into());
            };
            if let Some(ended) = self.on_event(&event.event, &event.id, &event.data).await {
                return ended;
            }
        }
        Ended::Again("the stream ended".into())
    }

    async fn on_event(&self, kind: &str, id: &str, data: &str) -> Option<Ended> {
        let value: Value = serde_json::from_str(data).unwrap_or(Value::Null);
        match kind {
            "ready" => self.stream_ready().await,
            "delivery" => {
                self.forward(&value).await;
                self.progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .last_event_id = Some(id.to_string());
            }
            "dropped" => println!(
                "hookd dropped {} events for this session: the local receiver was too slow",
                value["count"].as_u64().unwrap_or(0)
            ),
            "end" => {
                let reason = value["reason"].as_str().unwrap_or("the session ended");
                if reason == "restart" {
                    return Some(Ended::Again("hookd is restarting".into()));
                }
                return Some(Ended::Fatal(reason.to_string()));
            }
            _ => {}
        }
        None
    }

    /// POSTs one delivery to the local URL, prints both lines and reports the answer back.
    async fn forward(&self, delivery: &Value) {
        let url = self.args.forward_to.clone().unwrap_or_default();
        let delivery_id = delivery["delivery_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let event_type = delivery["event_type"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let body = delivery["body"].as_str().unwrap_or_default().to_string();
        println!("--> {event_type} {delivery_id}");
        if self.args.print_json {
            println!("{body}");
        }
        let mut request = self.local.post(&url).body(body);
        for pair in delivery["headers"].as_array().into_iter().flatten() {
            if let (Some(name), Some(value)) = (pair[0].as_str(), pair[1].as_str()) {
                request = request.header(name, value);
            }
        }
        let started = Instant::now();
        let result = request.send().await;
        let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
        let (status, error) = match result {
            Ok(response) => {
                let status = response.status().as_u16();
                println!("<-- {status} POST {url} ({ms} ms)");
                (Some(status), None)
            }
            Err(e) => {
                let error = without_url(e);
                println!("<-- ERR POST {url}: {error} ({ms} ms)");
                (None, Some(error))
            }
        };
        let Some(session) = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .session
            .clone()
        else {
            return;
        };
        let report = json!({
            "delivery_id": delivery_id, "event_type": event_type,
            "status": status, "error": error, "duration_ms": ms,
        });
        // The report is for the dashboard: losing one is no reason to stop forwarding.
        let _ = self
            .post(&format!("/v1/listen/sessions/{session}/answers"), report)
            .await;
    }

    /// Ends the session on hookd at once (Ctrl-C), best effort.
    async fn close(&self) {
        let session = self
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .session
            .clone();
        if let Some(session) = session {
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                self.api
                    .delete(self.url(&format!("/v1/listen/sessions/{session}")))
                    .bearer_auth(&self.link.token)
                    .send(),
            )
            .await;
        }
    }
}

/// A request error in words, without its URL (which holds nothing secret, but is long).
fn without_url(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(inner) = source {
        text = format!("{text}: {inner}");
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_ten_seconds() {
        assert_eq!(backoff(0), Duration::from_millis(250));
        assert_eq!(backoff(1), Duration::from_millis(500));
        assert_eq!(backoff(3), Duration::from_secs(2));
        assert_eq!(backoff(6), MAX_BACKOFF);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn a_portal_link_gives_the_base_and_the_token() {
        assert_eq!(
            Link::parse("https://hooks.example/ui/portal/abc.def/deliveries?x=1"),
            Ok(Link {
                base: "https://hooks.example".into(),
                token: "abc.def".into()
            })
        );
        assert!(Link::parse("https://hooks.example/ui/").is_err());
        assert!(Link::parse("https://hooks.example/ui/portal/").is_err());
        assert!(Link::parse("ftp://hooks.example/ui/portal/abc").is_err());
    }
}
