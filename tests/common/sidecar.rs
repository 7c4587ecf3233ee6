//! `manifold cmp-server` processes for tests: started from the real
//! binary with a plugin spec, serving on a real Unix socket.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use manifold::grpc::proto::plugin::config_management_plugin_service_client::ConfigManagementPluginServiceClient;
use tonic::transport::Channel;

pub type Client = ConfigManagementPluginServiceClient<Channel>;

/// A `manifold cmp-server` process with its own config, socket and work
/// directories.
pub struct Sidecar {
    pub child: Child,
    pub socket: PathBuf,
    pub dir: tempfile::TempDir,
    pub log: Arc<Mutex<Vec<u8>>>,
}

impl Sidecar {
    pub fn socket_dir(&self) -> PathBuf {
        self.socket.parent().unwrap().to_path_buf()
    }

    pub fn log(&self) -> String {
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }

    pub fn client(&self) -> Client {
        ConfigManagementPluginServiceClient::new(manifold::render::plugin::channel(&self.socket))
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit within 30s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a sidecar serving `spec`, with `files` (name, content) next to
/// it in its config directory, and waits until it serves. Its sockets go
/// to `socket_dir` (default: a directory of its own).
pub fn launch(
    spec: &str,
    files: &[(&str, String)],
    args: &[&str],
    socket_dir: Option<&Path>,
) -> Sidecar {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir_all(&config).unwrap();
    for (name, content) in files {
        std::fs::write(config.join(name), content).unwrap();
    }
    let spec = spec.replace("/home/argocd/cmp-server/config", config.to_str().unwrap());
    std::fs::write(config.join("plugin.yaml"), spec).unwrap();
    let socket_dir = socket_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.path().join("sockets"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_manifold"))
        .arg("cmp-server")
        .arg("--config")
        .arg(config.join("plugin.yaml"))
        .args(["--logformat", "text", "--exec-fatal-timeout", "1s"])
        .args(args)
        .env("ARGOCD_PLUGINSOCKFILEPATH", socket_dir)
        .env("ARGOCD_CMP_WORKDIR", dir.path().join("work"))
        .env("SIDECAR_ONLY", "from-sidecar")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    let mut seen = String::new();
    loop {
        line.clear();
        if stderr.read_line(&mut line).unwrap() == 0 {
            panic!("cmp-server exited before serving:\n{seen}");
        }
        seen.push_str(&line);
        if line.contains("manifold cmp-server is serving") {
            break;
        }
    }
    let start = line.find("socket=").unwrap() + "socket=".len();
    let socket = PathBuf::from(line[start..].split_whitespace().next().unwrap());
    let log = Arc::new(Mutex::new(seen.into_bytes()));
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
    Sidecar {
        child,
        socket,
        dir,
        log,
    }
}
