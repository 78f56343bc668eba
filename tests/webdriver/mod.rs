//! A headless Chromium driven through ChromeDriver's W3C WebDriver HTTP API (plain JSON over
//! reqwest): start, navigate, type, click, read text, cookies and a screenshot.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The key of an element reference in WebDriver answers.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    driver: Child,
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`
    session: String,
}

impl Drop for Browser {
    /// Also after a failed assertion: the session is closed (ChromeDriver ends its Chromium),
    /// then ChromeDriver's process group (itself and any browser left) is killed.
    fn drop(&mut self) {
        self.close_session_blocking();
        let _ = Command::new("kill")
            .args(["-KILL", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    /// Starts ChromeDriver on a free port and a headless Chromium session; panics with what to
    /// install when either is missing (the browser test never skips).
    pub async fn start() -> Browser {
        for (path, package) in [(CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")] {
            assert!(
                std::path::Path::new(path).exists(),
                "{path} is missing: the admin page's browser test needs a real headless Chromium. \
                 Install it: apt-get install -y {package} (.ci/run does this when it is missing)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"));
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = http.get(format!("{base}/status")).send().await
                && let Ok(v) = r.json::<Value>().await
                && v["value"]["ready"] == true
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut b = Browser {
            driver,
            http,
            session: String::new(),
        };
        assert!(ready, "{CHROMEDRIVER} never answered on port {port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": ["--headless", "--no-sandbox", "--disable-gpu",
                         "--disable-background-networking", "--disable-dev-shm-usage",
                         "--window-size=1200,900"]
            }
        }}});
        let v = b.call("POST", &format!("{base}/session"), Some(caps)).await;
        let id = v["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {v}"));
        b.session = format!("{base}/session/{id}");
        b
    }

    /// One WebDriver command; its `value`. Panics on a WebDriver error, naming it.
    async fn call(&self, method: &str, url: &str, body: Option<Value>) -> Value {
        match self.try_call(method, url, body).await {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        }
    }

    async fn try_call(
        &self,
        method: &str,
        url: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let req = match method {
            "GET" => self.http.get(url),
            "DELETE" => self.http.delete(url),
            _ => self.http.post(url).json(&body.unwrap_or(json!({}))),
        };
        let r = req
            .send()
            .await
            .map_err(|e| format!("{method} {url}: {e}"))?;
        let status = r.status();
        let v: Value = r.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            return Err(format!("{method} {url}: {status} {v}"));
        }
        Ok(v["value"].clone())
    }

    async fn cmd(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.call(method, &format!("{}{path}", self.session), body)
            .await
    }

    pub async fn go(&self, url: &str) {
        self.cmd("POST", "/url", Some(json!({ "url": url }))).await;
    }

    pub async fn url(&self) -> String {
        self.cmd("GET", "/url", None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    /// The current URL once it ends with `suffix`, waiting up to 10 s (a form's answer loading);
    /// the URL it is left at otherwise.
    pub async fn url_ending(&self, suffix: &str) -> String {
        let mut url = self.url().await;
        for _ in 0..100 {
            if url.ends_with(suffix) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            url = self.url().await;
        }
        url
    }

    /// The first element a CSS selector finds, waiting up to 10 s for it (a page loading).
    async fn find(&self, css: &str) -> String {
        let url = format!("{}/element", self.session);
        let mut last = String::new();
        for _ in 0..100 {
            let body = json!({"using": "css selector", "value": css});
            match self.try_call("POST", &url, Some(body)).await {
                Ok(v) if v[ELEMENT].is_string() => {
                    return v[ELEMENT].as_str().unwrap_or("").to_string();
                }
                Ok(v) => last = v.to_string(),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("no element {css} on {}: {last}", self.url().await)
    }

    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        self.cmd(
            "POST",
            &format!("/element/{e}/value"),
            Some(json!({ "text": text })),
        )
        .await;
    }

    /// Clicks an element (a form's button: the browser follows the form's answer).
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        self.cmd("POST", &format!("/element/{e}/click"), None).await;
    }

    /// The rendered text of the first element a selector finds.
    pub async fn text(&self, css: &str) -> String {
        let e = self.find(css).await;
        self.cmd("GET", &format!("/element/{e}/text"), None)
            .await
            .as_str()
            .unwrap_or("")
            .to_string()
    }

    pub async fn cookies(&self) -> Vec<Value> {
        self.cmd("GET", "/cookie", None)
            .await
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A PNG of the window.
    pub async fn screenshot(&self) -> Vec<u8> {
        use base64::Engine;
        let v = self.cmd("GET", "/screenshot", None).await;
        base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("a base64 PNG")
    }

    pub async fn quit(mut self) {
        self.cmd("DELETE", "", None).await;
        self.session.clear();
    }

    /// `DELETE /session/<id>` without the async client (from `drop`).
    fn close_session_blocking(&self) {
        let Some(rest) = self.session.strip_prefix("http://") else {
            return;
        };
        let Some((host, path)) = rest.split_once('/') else {
            return;
        };
        let Ok(addr) = host.parse() else {
            return;
        };
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) else {
            return;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
        let req = format!(
            "DELETE /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        if s.write_all(req.as_bytes()).is_ok() {
            let _ = s.read_to_end(&mut Vec::new());
        }
    }
}
