//! A client for a running node's HTTP API, for the commands that talk to one.
//!
//! The node's address comes from `--node`, `AURA_NODE`, or the data directory's
//! `aura.toml`; the key from `--api-key` or `AURA_API_KEY`. The node's JSON errors become
//! one-line errors with a hint.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::hinted;
use crate::home::Home;

#[derive(Debug, Clone)]
pub(crate) struct Client {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// How to reach a node, from the command line.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct NodeArgs {
    /// The node's URL [default: from aura.toml, else http://127.0.0.1:8080]
    #[arg(long, global = true, env = "AURA_NODE", value_name = "URL")]
    pub(crate) node: Option<String>,
    /// An API key for the node
    #[arg(
        long,
        global = true,
        env = "AURA_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub(crate) api_key: Option<String>,
}

impl Client {
    pub(crate) fn new(home: &Home, args: &NodeArgs) -> anyhow::Result<Client> {
        let base = match &args.node {
            Some(n) => n.trim_end_matches('/').to_owned(),
            None => {
                let config = aura_node::Config::load(&aura_node::Config::path(home.dir()))
                    .unwrap_or_default();
                format!("http://{}", config.http.listen)
            }
        };
        Client::at(base, args.api_key.clone())
    }

    /// A client of the node at `base` (no trailing slash) with the API key `key`.
    pub(crate) fn at(base: String, key: Option<String>) -> anyhow::Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build an HTTP client: {e}"))?;
        Ok(Client { base, key, http })
    }

    /// The node's URL, without a trailing slash.
    pub(crate) fn base(&self) -> &str {
        &self.base
    }

    /// Opens the event stream as a WebSocket.
    pub(crate) async fn events(
        &self,
        query: &str,
    ) -> anyhow::Result<
        tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    > {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
        let url = format!("{}/v1/events?{query}", self.base.replacen("http", "ws", 1));
        let mut request = url
            .into_client_request()
            .map_err(|e| anyhow::anyhow!("bad node URL: {e}"))?;
        if let Some(k) = &self.key {
            let value = format!("Bearer {k}")
                .parse()
                .map_err(|_| anyhow::anyhow!("the API key is not a valid header value"))?;
            request.headers_mut().insert("authorization", value);
        }
        let (ws, _) = tokio_tungstenite::connect_async(request)
            .await
            .map_err(|e| {
                hinted(
                    format!("cannot open the event stream at {}: {e}", self.base),
                    "is the node running, and is the key valid?",
                )
            })?;
        Ok(ws)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        r
    }

    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    pub(crate) async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::POST, path).json(body))
            .await
    }

    pub(crate) async fn delete<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.send(self.request(reqwest::Method::DELETE, path)).await
    }

    async fn send<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> anyhow::Result<T> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() || e.is_timeout() {
                hinted(
                    format!("cannot reach the node at {}", self.base),
                    "start one with `aura serve`, or point --node (or AURA_NODE) at it",
                )
            } else {
                anyhow::anyhow!("the request to {} failed: {e}", self.base)
            }
        })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the node's answer: {e}"))?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|e| {
                anyhow::anyhow!("the node's answer is not what this aura expects: {e}")
            });
        }
        #[derive(serde::Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(serde::Deserialize)]
        struct Detail {
            message: String,
            #[serde(rename = "type")]
            kind: String,
        }
        let (message, kind) = match serde_json::from_slice::<Body>(&bytes) {
            Ok(b) => (b.error.message, b.error.kind),
            Err(_) => (format!("the node answered {status}"), String::new()),
        };
        let hint = match kind.as_str() {
            "authentication_error" => {
                "pass --api-key (or set AURA_API_KEY) with a key from `aura apikey create`"
            }
            "permission_error" => "use a key whose role and namespaces allow this",
            "rate_limit_error" => "wait a moment and try again",
            "not_found_error" => {
                "check the id: `aura agent list` and `aura mission list` show what exists"
            }
            _ => "",
        };
        if hint.is_empty() {
            Err(anyhow::anyhow!(message))
        } else {
            Err(hinted(message, hint))
        }
    }
}
