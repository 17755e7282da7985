//! A network namespace linked to the test's by a veth pair, for partition tests: a process
//! runs inside it (`ip netns exec`), and nftables in it drops every packet in and out
//! (a partition: calls hang, nothing fails fast) until healed. Removed on drop. Needs root,
//! `ip` and `nft`.

use std::process::Command;

/// Whether partition tests can run here: root, with `ip` and `nft`.
pub fn can_partition() -> Result<(), String> {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !root {
        return Err("not root".to_owned());
    }
    for tool in ["ip", "nft"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Err(format!(
                "`{tool}` is not installed (apt-get install iproute2 nftables)"
            ));
        }
    }
    // Root in a container may still lack CAP_NET_ADMIN: try for real.
    let probe = format!("fs-probe-{}", std::process::id());
    let made = Command::new("ip").args(["netns", "add", &probe]).output();
    let _ = Command::new("ip").args(["netns", "del", &probe]).output();
    match made {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "cannot make a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("cannot run ip: {e}")),
    }
}

/// Runs a command, failing the test with its stderr if it fails.
fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A namespace with a link to the test's: the test's side has `.1`, the namespace's `.2`.
pub struct Netns {
    pub name: String,
    veth: String,
    /// The test's end of the link.
    pub outside: String,
    /// The namespace's end.
    pub inside: String,
}

impl Netns {
    /// Creates it, with a /30 of 10.201.0.0/16 picked from the process id.
    pub fn create() -> Self {
        let id = std::process::id();
        let name = format!("fs-part-{id}");
        let veth = format!("fsp{}", id % 100_000);
        let (a, b) = (format!("{veth}a"), format!("{veth}b"));
        let (outside, inside) = (
            format!("10.201.{}.1", (id % 250) + 1),
            format!("10.201.{}.2", (id % 250) + 1),
        );
        // Left over by a crashed run of this same process id: removed first.
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        let _ = Command::new("ip").args(["link", "del", &a]).output();
        run(&["ip", "netns", "add", &name]);
        run(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
        run(&["ip", "link", "set", &b, "netns", &name]);
        run(&["ip", "addr", "add", &format!("{outside}/30"), "dev", &a]);
        run(&["ip", "link", "set", &a, "up"]);
        run(&[
            "ip",
            "netns",
            "exec",
            &name,
            "ip",
            "addr",
            "add",
            &format!("{inside}/30"),
            "dev",
            &b,
        ]);
        run(&["ip", "netns", "exec", &name, "ip", "link", "set", &b, "up"]);
        run(&[
            "ip", "netns", "exec", &name, "ip", "link", "set", "lo", "up",
        ]);
        Self {
            name,
            veth: a,
            outside,
            inside,
        }
    }

    /// `ip netns exec NAME` before a command.
    pub fn exec_prefix(&self) -> Vec<String> {
        vec!["netns".into(), "exec".into(), self.name.clone()]
    }

    /// Drops every packet in and out of the namespace.
    pub fn partition(&self) {
        let ns = ["ip", "netns", "exec", &self.name, "nft"];
        let cmd = |rest: &[&str]| {
            let mut all = ns.to_vec();
            all.extend_from_slice(rest);
            run(&all);
        };
        cmd(&["add", "table", "inet", "partition"]);
        cmd(&[
            "add",
            "chain",
            "inet",
            "partition",
            "in",
            "{ type filter hook input priority 0; policy drop; }",
        ]);
        cmd(&[
            "add",
            "chain",
            "inet",
            "partition",
            "out",
            "{ type filter hook output priority 0; policy drop; }",
        ]);
    }

    /// Lets packets through again.
    pub fn heal(&self) {
        run(&[
            "ip",
            "netns",
            "exec",
            &self.name,
            "nft",
            "delete",
            "table",
            "inet",
            "partition",
        ]);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.veth])
            .output();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
