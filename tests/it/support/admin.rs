//! The admin API as the tests call it: one client for any hookd a test talks to (in-process,
//! the binary, a node of several), with a bearer token or without. `TestApp::admin`,
//! `HookdProcess::admin` and `Daemon::admin` make one; a test with a handle of its own makes
//! one with [`Admin::new`].

use std::net::SocketAddr;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::Value;

// Here, not in `process`, which the benchmarks include without this module.
impl super::process::HookdProcess {
    /// The admin API of this hookd, on a client of its own.
    pub fn admin(&self) -> Admin {
        Admin::new(self.api, super::http_client())
    }
}

/// A client of one hookd's API listener.
#[derive(Clone)]
pub struct Admin {
    api: SocketAddr,
    client: reqwest::Client,
    token: Option<String>,
}

/// One answer: its status, headers and body text.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
}

impl Answer {
    /// The body as JSON; panics, showing it, when it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("answer {} is not JSON ({e}): {}", self.status, self.text))
    }

    /// The body as JSON; a text that is not JSON as a string; no body as null.
    pub fn value(&self) -> Value {
        if self.text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&self.text).unwrap_or_else(|_| Value::String(self.text.clone()))
        }
    }

    /// Header `name`, when the answer has it.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ASCII header").to_string())
    }
}

impl Admin {
    /// A client of the API at `api` with `client`, without a token.
    pub fn new(api: SocketAddr, client: reqwest::Client) -> Admin {
        Admin {
            api,
            client,
            token: None,
        }
    }

    /// The same client, sending `token` as `Authorization: Bearer <token>` (none for `None`).
    pub fn token(mut self, token: Option<&str>) -> Admin {
        self.token = token.map(str::to_string);
        self
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.api)
    }

    /// `method path` with the token and `body` (JSON text, sent as `application/json`); panics
    /// when no answer arrives.
    pub async fn send(&self, method: Method, path: &str, body: Option<String>) -> Answer {
        let mut request = self.client.request(method.clone(), self.url(path));
        if let Some(token) = &self.token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response
            .text()
            .await
            .unwrap_or_else(|e| panic!("{method} {path}: the answer's body: {e}"));
        Answer {
            status,
            headers,
            text,
        }
    }

    /// `method path` with an optional JSON body: the status and [`Answer::value`].
    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let answer = self.send(method, path, body.map(|b| b.to_string())).await;
        (answer.status, answer.value())
    }

    /// `POST /v1/portal-links` for `owner`, valid an hour: the link's URL (its path is
    /// `/ui/portal/<token>`); panics unless `201`.
    pub async fn portal_link(&self, owner: &str) -> String {
        let body = serde_json::json!({ "owner": owner, "expires_in": "1h" });
        let (status, link) = self
            .call(Method::POST, "/v1/portal-links", Some(body))
            .await;
        assert_eq!(status, 201, "{link}");
        link["url"].as_str().expect("the link's url").to_string()
    }

    /// `GET path`: the status and the answer, which must be JSON.
    pub async fn get(&self, path: &str) -> (u16, Value) {
        let answer = self.send(Method::GET, path, None).await;
        (answer.status, answer.json())
    }

    /// `GET path`, which must answer 200 with JSON.
    pub async fn get_ok(&self, path: &str) -> Value {
        let (status, body) = self.get(path).await;
        assert_eq!(status, 200, "GET {path} answered {status}: {body}");
        body
    }

    /// `POST path` with an optional JSON body: the status and the answer, which must be JSON.
    pub async fn post(&self, path: &str, body: Option<Value>) -> (u16, Value) {
        let answer = self
            .send(Method::POST, path, body.map(|b| b.to_string()))
            .await;
        (answer.status, answer.json())
    }

    /// Every delivery `GET /v1/deliveries` lists with `query` (e.g. `status=dead`), following
    /// the cursors to the end.
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/deliveries?{query}&limit=1000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = self.get_ok(&path).await;
            all.extend(
                page["deliveries"]
                    .as_array()
                    .unwrap_or_else(|| panic!("GET {path}: no deliveries array: {page}"))
                    .iter()
                    .cloned(),
            );
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_string()),
                None => return all,
            }
        }
    }
}
