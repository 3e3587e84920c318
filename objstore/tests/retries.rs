//! The S3 and Azure backends retry throttling (503) and server errors (500): a proxy in
//! front of the real server answers every other request with one of them, in the
//! vendor's error format, and every operation still succeeds with the right result.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use std::time::Duration;

use tidemark_objstore::azure::{AzureConfig, AzureStore};
use tidemark_objstore::{ObjectStore, S3Config, S3Store, StoreError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Counts what the proxy did.
#[derive(Default)]
struct Counts {
    requests: AtomicU64,
    failed: AtomicU64,
}

/// How the proxy fails requests: the error codes a backend's service uses for
/// throttling and for a server error, and whether a failed request first reaches the
/// server (its answer lost on the way back) or not.
struct Faults {
    throttled: &'static str,
    internal: &'static str,
    lose_answers: bool,
}

const S3_FAULTS: Faults = Faults {
    throttled: "SlowDown",
    internal: "InternalError",
    lose_answers: false,
};

const AZURE_FAULTS: Faults = Faults {
    throttled: "ServerBusy",
    internal: "InternalError",
    lose_answers: false,
};

/// Reads one HTTP/1.1 request (head and a Content-Length body) from `conn`.
async fn read_request(conn: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let head_end = loop {
        let mut byte = [0u8; 4096];
        let n = conn.read(&mut byte).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8(buf[..head_end].to_vec()).ok()?;
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < len {
        let mut chunk = vec![0u8; len - body.len()];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Some((head, body))
}

/// Serves one connection: every other request gets a retryable error, the rest go to
/// `upstream` (one request per upstream connection, so responses need no parsing).
async fn serve(mut conn: TcpStream, upstream: String, faults: &Faults, counts: Arc<Counts>) {
    let Some((head, body)) = read_request(&mut conn).await else {
        return;
    };
    let n = counts.requests.fetch_add(1, Ordering::SeqCst);
    if n.is_multiple_of(2) {
        counts.failed.fetch_add(1, Ordering::SeqCst);
        if faults.lose_answers {
            forward(&head, &body, &upstream).await;
        }
        let (status, code) = if n.is_multiple_of(4) {
            ("503 Service Unavailable", faults.throttled)
        } else {
            ("500 Internal Server Error", faults.internal)
        };
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>\
             <Message>injected</Message></Error>"
        );
        let reply = format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/xml\r\nContent-Length: {}\r\n\
             x-ms-error-code: {code}\r\nConnection: close\r\n\r\n{xml}",
            xml.len()
        );
        let _ = conn.write_all(reply.as_bytes()).await;
        return;
    }
    if let Some(response) = forward(&head, &body, &upstream).await {
        let _ = conn.write_all(&response).await;
    }
}

/// Sends one request to `upstream` on a connection of its own; returns the answer.
async fn forward(head: &str, body: &[u8], upstream: &str) -> Option<Vec<u8>> {
    let mut rewritten: String = head
        .trim_end()
        .lines()
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .map(|l| format!("{l}\r\n"))
        .collect();
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut up = TcpStream::connect(upstream).await.ok()?;
    up.write_all(rewritten.as_bytes()).await.ok()?;
    up.write_all(body).await.ok()?;
    let mut response = Vec::new();
    up.read_to_end(&mut response).await.ok()?;
    Some(response)
}

/// Starts the proxy in front of `upstream` (`host:port`); returns its address.
async fn start_proxy(upstream: String, faults: &'static Faults, counts: Arc<Counts>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, upstream.clone(), faults, counts.clone()));
        }
    });
    addr.to_string()
}

/// Every kind of operation, each through at least one injected failure.
async fn exercise(store: &dyn ObjectStore, counts: &Counts) {
    let data = Bytes::from_static(b"retried until it worked");
    let put = store
        .put("a/obj", data.clone())
        .await
        .expect("put through errors");
    let got = store.get("a/obj").await.expect("get through errors");
    assert_eq!(got.data, data);
    assert_eq!(got.etag, put.etag);
    assert_eq!(
        store.get_range("a/obj", 8..13).await.expect("range"),
        Bytes::from_static(b"until")
    );
    store
        .put_if_absent("a/seg", data.clone())
        .await
        .expect("create-only through errors");
    assert!(matches!(
        store.put_if_absent("a/seg", data.clone()).await,
        Err(StoreError::AlreadyExists { .. })
    ));
    let replaced = store
        .put_if_match("a/obj", Bytes::from_static(b"v2"), &put.etag)
        .await
        .expect("if-match through errors");
    assert!(matches!(
        store
            .put_if_match("a/obj", Bytes::from_static(b"v3"), &put.etag)
            .await,
        Err(StoreError::PreconditionFailed { .. })
    ));
    let now = store.get("a/obj").await.expect("get after if-match");
    assert_eq!(
        (now.data, now.etag),
        (Bytes::from_static(b"v2"), replaced.etag)
    );
    let listed = store
        .list_all("a/", None)
        .await
        .expect("list through errors");
    assert_eq!(listed.len(), 2);
    store.delete("a/obj").await.expect("delete through errors");
    assert!(matches!(
        store.head("a/obj").await,
        Err(StoreError::NotFound { .. })
    ));
    let failed = counts.failed.load(Ordering::SeqCst);
    let total = counts.requests.load(Ordering::SeqCst);
    assert!(failed >= 8, "only {failed} of {total} requests were failed");
    assert!(
        total >= 2 * failed - 1,
        "{failed} failures, {total} requests"
    );
}

async fn s3_through(faults: &'static Faults) {
    let endpoint = std::env::var("TIDEMARK_TEST_S3_ENDPOINT")
        .expect("set TIDEMARK_TEST_S3_ENDPOINT; scripts/test.sh starts moto and sets it");
    let upstream = endpoint
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let bucket = format!("tdmk-retry-{:08x}", rand::random::<u32>());
    let mut direct = S3Config::new(bucket);
    direct.endpoint = Some(endpoint);
    direct.path_style = true;
    S3Store::new(direct.clone())
        .expect("config")
        .create_bucket_if_missing()
        .await
        .expect("create bucket");
    let counts = Arc::new(Counts::default());
    let proxy = start_proxy(upstream, faults, counts.clone()).await;
    let mut cfg = direct;
    cfg.endpoint = Some(format!("http://{proxy}"));
    // Streaming checksums would send aws-chunked bodies this small proxy cannot frame.
    cfg.checksums_when_required = true;
    exercise(&S3Store::new(cfg).expect("config"), &counts).await;
}

async fn azure_through(faults: &'static Faults) {
    let cs = std::env::var("TIDEMARK_TEST_AZURE_CONNECTION_STRING").expect(
        "set TIDEMARK_TEST_AZURE_CONNECTION_STRING; scripts/test.sh starts Azurite and sets it",
    );
    let container = format!("tdmk-retry-{:08x}", rand::random::<u32>());
    let direct = AzureConfig::from_connection_string(&cs, container).expect("config");
    AzureStore::new(direct.clone())
        .expect("store")
        .create_container_if_missing()
        .await
        .expect("create container");
    let endpoint = direct.endpoint.clone().expect("Azurite endpoint");
    let rest = endpoint.trim_start_matches("http://");
    let (upstream, account_path) = rest.split_once('/').unwrap_or((rest, ""));
    let counts = Arc::new(Counts::default());
    let proxy = start_proxy(upstream.to_owned(), faults, counts.clone()).await;
    let mut cfg = direct;
    cfg.endpoint = Some(format!("http://{proxy}/{account_path}"));
    cfg.retry.initial_delay = Duration::from_millis(20);
    exercise(&AzureStore::new(cfg).expect("store"), &counts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_retries_throttling_and_server_errors() {
    s3_through(&S3_FAULTS).await;
}

/// Every other request lands but its answer is lost: a retried conditional write must
/// recognise its own landed attempt instead of reporting a conflict.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_conditional_writes_survive_lost_answers() {
    s3_through(&Faults {
        lose_answers: true,
        ..S3_FAULTS
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_retries_throttling_and_server_errors() {
    azure_through(&AZURE_FAULTS).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_conditional_writes_survive_lost_answers() {
    azure_through(&Faults {
        lose_answers: true,
        ..AZURE_FAULTS
    })
    .await;
}
