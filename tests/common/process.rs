//! Running the `manifold` binary as an operator does, for tests that need
//! a server in a process of its own (signals, children, exit status).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `manifold serve` process.
pub struct Running {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    log: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
    /// The server's `$TMPDIR` (its work directory lives there), removed
    /// with it, unless the caller chose one.
    _tmp: Option<tempfile::TempDir>,
}

impl Running {
    /// Everything the server logged so far (after its start-up line).
    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

/// Starts the binary on ephemeral ports and reads the bound addresses from
/// its start-up log line.
pub fn start(extra_args: &[&str], env: &[(&str, &str)]) -> Running {
    // MANIFOLD_BIN runs another build of the binary (e.g. one with symbols,
    // to profile a benchmark).
    let binary =
        std::env::var_os("MANIFOLD_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_manifold").into());
    let mut command = Command::new(binary);
    // A server keeps its work directory in $TMPDIR for the next start:
    // each test server gets a $TMPDIR of its own.
    let tmp = (!env.iter().any(|(name, _)| *name == "TMPDIR")).then(|| {
        tempfile::Builder::new()
            .prefix("manifold-tmp-")
            .tempdir()
            .unwrap()
    });
    if let Some(tmp) = &tmp {
        command.env("TMPDIR", tmp.path());
    }
    command
        .args([
            "serve",
            "--address",
            "127.0.0.1",
            "--port",
            "0",
            "--metrics-address",
            "127.0.0.1",
            "--metrics-port",
            "0",
        ])
        .args(["--logformat", "text"])
        .args(extra_args)
        .env("ARGOCD_APP_CONF_PATH", "/nonexistent")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "server exited before serving"
        );
        if line.contains("manifold is serving") {
            break;
        }
    }
    let field = |name: &str| -> SocketAddr {
        let start = line.find(&format!("{name}=")).unwrap() + name.len() + 1;
        line[start..]
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (grpc, http) = (field("grpc"), field("http"));
    // Keep draining the log so the server never blocks on a full pipe.
    let log = std::sync::Arc::new(std::sync::Mutex::new(line.into_bytes()));
    let sink = log.clone();
    std::thread::spawn(move || {
        let mut buffer = [0u8; 8192];
        while let Ok(n) = stderr.read(&mut buffer) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&buffer[..n]);
        }
    });
    Running {
        child,
        grpc,
        http,
        log,
        _tmp: tmp,
    }
}

pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// Sends SIGTERM and waits for a clean exit. The wait runs off the test's
/// runtime so client connections on it can still answer the server's
/// GOAWAY while it drains.
pub async fn terminate_and_wait(mut running: Running) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::task::spawn_blocking(move || running.child.wait()),
    )
    .await
    .expect("server did not stop within 30s of SIGTERM");
    let status = waited.unwrap().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");
}

/// POSTs `body` with `headers`; the status code and the response body.
pub fn http_post(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    // The server may answer (and close) before reading a refused body.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no HTTP status in {response:?}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The value of the sample `name` (with its labels, as exposed, e.g.
/// `x_total{kind="a"}`) in a `/metrics` text; 0 when absent (a labelled
/// counter appears only once counted).
pub fn sample(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}
