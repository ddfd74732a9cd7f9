//! A small HTTP client for the daemon's JSON API, as a browser or script would use it.

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A JSON answer: status, body (Null when empty), and the headers that tests look at.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Answer {
    /// The `error` code of a typed error body.
    pub fn code(&self) -> &str {
        self.body["error"].as_str().unwrap_or("")
    }

    #[track_caller]
    pub fn expect(self, status: u16) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {:?}",
            self.body
        );
        self
    }

    /// Asserts status and error code, and that the body is a typed error with a message.
    #[track_caller]
    pub fn expect_error(self, status: u16, code: &str) -> Self {
        assert_eq!(
            self.status.as_u16(),
            status,
            "unexpected answer: {:?}",
            self.body
        );
        assert_eq!(self.code(), code, "unexpected error body: {:?}", self.body);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without message: {:?}",
            self.body
        );
        self
    }
}

/// A client bound to one daemon, optionally authenticated with a bearer token.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    pub http: reqwest::Client,
}

impl Api {
    pub fn new(base: impl Into<String>) -> Self {
        Self {
            base: base.into(),
            token: None,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
        }
    }

    pub fn with_token(&self, token: &str) -> Self {
        Self {
            token: Some(token.to_owned()),
            ..self.clone()
        }
    }

    pub async fn send(&self, method: Method, path: &str, body: Option<Value>) -> Answer {
        self.send_with(method, path, body, |r| r).await
    }

    pub async fn send_with(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        f: impl FnOnce(reqwest::RequestBuilder) -> reqwest::RequestBuilder,
    ) -> Answer {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let response = f(req).send().await.expect("request");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.unwrap();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
        };
        Answer {
            status,
            body,
            headers,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.send(Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.send(Method::POST, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Answer {
        self.send(Method::DELETE, path, None).await
    }

    pub async fn register(&self, username: &str, password: &str) -> Answer {
        self.post(
            "/api/auth/register",
            json!({"username": username, "password": password}),
        )
        .await
    }

    pub async fn login(&self, username: &str, password: &str) -> Answer {
        self.post(
            "/api/auth/login",
            json!({"username": username, "password": password}),
        )
        .await
    }

    /// Registers (if allowed) and logs in, returning an authenticated client.
    pub async fn user(&self, username: &str, password: &str) -> Api {
        let _ = self.register(username, password).await;
        let answer = self.login(username, password).await.expect(200);
        self.with_token(answer.body["token"].as_str().unwrap())
    }

    pub async fn set_api_key(&self, key: &str) -> Answer {
        self.post("/api/claude/auth/api-key", json!({"apiKey": key}))
            .await
    }

    pub async fn create_project(&self, id: &str) -> Answer {
        self.post("/api/projects", json!({"id": id})).await
    }

    /// Creates a session on `project` (creating the project if needed); returns its id.
    pub async fn new_session(&self, project: &str) -> String {
        let _ = self.create_project(project).await;
        let answer = self
            .post("/api/sessions", json!({"project": project}))
            .await
            .expect(201);
        answer.body["id"].as_str().unwrap().to_owned()
    }

    pub async fn session(&self, id: &str) -> Value {
        self.get(&format!("/api/sessions/{id}"))
            .await
            .expect(200)
            .body
    }

    /// Registers, logs in and connects `key` (which the mock must accept).
    /// A WebSocket to `session` on this client's daemon, with its bearer token.
    pub async fn socket(&self, session: &str) -> crate::common::ws::Socket {
        let token = self.token.as_deref().expect("a logged-in client");
        crate::common::ws::Connect::bearer(&self.base, session, token)
            .open()
            .await
    }

    /// Runs one turn ("Hello") in a new session on `project` and returns its child's
    /// environment (from `/proc/<pid>/environ`).
    pub async fn child_env_after_turn(&self, project: &str) -> Vec<String> {
        let session = self.new_session(project).await;
        let mut ws = self.socket(&session).await;
        ws.say("Hello").await;
        ws.until_result().await;
        let pid = self.session(&session).await["pid"]
            .as_u64()
            .expect("a child runs") as u32;
        crate::common::daemon::process_environ(pid)
    }

    pub async fn user_with_key(&self, username: &str, key: &str) -> Api {
        let api = self.user(username, "correct horse battery").await;
        api.set_api_key(key).await.expect(200);
        api
    }
}
