//! PostgreSQL and Redis servers that a test starts itself, on free ports, with or without TLS,
//! and can stop, kill and restart (the machine's own instances are shared and left alone).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use inframind::serving::tls::{self_signed, SelfSigned};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A CA and a server certificate for `localhost` (only: `127.0.0.1` is not among its names).
pub fn localhost_certs() -> SelfSigned {
    self_signed(&["localhost".to_string()]).expect("generating test certificates")
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn is_root() -> bool {
    run(Command::new("id").arg("-u")) == "0"
}

fn wait_port(port: u16, up: bool) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        let open = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok();
        if open == up {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!(
        "port {port} did not become {}",
        if up { "open" } else { "closed" }
    );
}

/// A throwaway PostgreSQL cluster (initdb + pg_ctl), run as `postgres` when the test is root
/// (initdb refuses root).
pub struct TestPostgres {
    /// Its TCP port on 127.0.0.1.
    pub port: u16,
    _root: tempfile::TempDir,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

impl TestPostgres {
    /// Initialises and starts a cluster; with `tls`, it serves TLS and accepts TCP clients only
    /// over TLS (`hostssl`), so a connection that succeeds did use TLS.
    pub fn start(tls: Option<&SelfSigned>) -> TestPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries in /usr/lib/postgresql")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|b| b.join("initdb").exists())
            .max()
            .expect("an initdb under /usr/lib/postgresql/*/bin");
        let root = tempfile::tempdir().expect("a temporary directory");
        let data = root.path().join("data");
        let as_postgres = is_root();
        if as_postgres {
            let uid: u32 = run(Command::new("id").args(["-u", "postgres"]))
                .parse()
                .unwrap();
            let gid: u32 = run(Command::new("id").args(["-g", "postgres"]))
                .parse()
                .unwrap();
            std::os::unix::fs::chown(root.path(), Some(uid), Some(gid)).unwrap();
        }
        let pg = TestPostgres {
            port: free_port(),
            _root: root,
            data,
            bin,
            as_postgres,
        };
        run(pg
            .command("initdb")
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&pg.data));
        let mut conf = format!(
            "port = {}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n",
            pg.port,
            pg.data.display()
        );
        let hba = if let Some(certs) = tls {
            pg.write_owned("server.crt", &certs.serving.cert);
            pg.write_owned("server.key", &certs.serving.key);
            conf.push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\n"
        } else {
            "local all all trust\nhost all all 127.0.0.1/32 trust\n"
        };
        pg.write_owned("pg_hba.conf", hba);
        let mut all = std::fs::read_to_string(pg.data.join("postgresql.conf")).unwrap();
        all.push_str(&conf);
        pg.write_owned("postgresql.conf", &all);
        pg.start_again();
        pg
    }

    fn command(&self, tool: &str) -> Command {
        let exe = self.bin.join(tool);
        if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        }
    }

    fn write_owned(&self, name: &str, text: &str) {
        use std::os::unix::fs::PermissionsExt;
        let path = self.data.join(name);
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        if self.as_postgres {
            let meta = std::fs::metadata(&self.data).unwrap();
            use std::os::unix::fs::MetadataExt;
            std::os::unix::fs::chown(&path, Some(meta.uid()), Some(meta.gid())).unwrap();
        }
    }

    /// Starts the (stopped) server and waits until it accepts connections.
    pub fn start_again(&self) {
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .args(["-w", "-t", "30", "start"])
            .stdout(Stdio::null()));
        wait_port(self.port, true);
    }

    #[allow(dead_code)]
    /// Stops the server at once (connections are cut, as in a crash or failover).
    pub fn stop(&self) {
        run(self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null()));
        wait_port(self.port, false);
    }

    /// A URL for database `postgres` at `host` with extra query parameters.
    pub fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres{params}", self.port)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        let _ = self
            .command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A throwaway redis-server (no persistence), plain or TLS-only.
pub struct TestRedis {
    /// The port it serves on (TLS when started with certificates).
    pub port: u16,
    dir: tempfile::TempDir,
    tls: bool,
    child: Option<Child>,
}

impl TestRedis {
    /// Starts a server; with `tls`, only TLS on its port (`--port 0`).
    pub fn start(tls: Option<&SelfSigned>) -> TestRedis {
        let dir = tempfile::tempdir().expect("a temporary directory");
        if let Some(certs) = tls {
            std::fs::write(dir.path().join("server.crt"), &certs.serving.cert).unwrap();
            std::fs::write(dir.path().join("server.key"), &certs.serving.key).unwrap();
            std::fs::write(dir.path().join("ca.crt"), &certs.ca_cert).unwrap();
        }
        let mut r = TestRedis {
            port: free_port(),
            dir,
            tls: tls.is_some(),
            child: None,
        };
        r.start_again();
        r
    }

    /// Starts the (killed) server again on the same port.
    pub fn start_again(&mut self) {
        let d = self.dir.path();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(d);
        if self.tls {
            cmd.args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(d.join("server.crt"))
                .arg("--tls-key-file")
                .arg(d.join("server.key"))
                .arg("--tls-ca-cert-file")
                .arg(d.join("ca.crt"))
                .args(["--tls-auth-clients", "no"]);
        } else {
            cmd.args(["--port", &self.port.to_string()]);
        }
        let child = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        wait_port(self.port, true);
    }

    #[allow(dead_code)]
    /// Kills the server (SIGKILL): every connection drops.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        wait_port(self.port, false);
    }

    /// The directory holding its files.
    #[allow(dead_code)]
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestRedis {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
