//! The `[http]` table: where the agent's read-only HTTP listener (`/metrics`, `/healthz`,
//! `/api/status` and the status page) listens, and the warning `check` gives when that is
//! reachable from other machines.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use super::Settings;

/// `[http]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// The address to bind; port 0 lets the system pick one (the agent logs which).
    pub listen: SocketAddr,
    /// `allowed_hosts`: more `Host` values the listener answers besides its own address, its
    /// machine's names and `localhost` (a reverse proxy's name, a DNS alias), in lower case;
    /// with a port (`status.example:8443`) only with that port, without one with any.
    pub allowed_hosts: Vec<String>,
}

impl HttpSettings {
    /// Only this machine can connect.
    pub fn is_loopback(&self) -> bool {
        // `::ffff:127.0.0.1` is 127.0.0.1 written as IPv6: loopback too.
        self.listen.ip().to_canonical().is_loopback()
    }
}

/// Reads `listen`: an IP address with a port (`127.0.0.1:9811`, `[::1]:9811`, `0.0.0.0:9811`),
/// `localhost:9811`, or a port alone (`9811`), which listens on loopback. A host name other
/// than `localhost` is refused: what it resolves to can change under the running agent, and a
/// listener must not become reachable from elsewhere without the user writing so.
pub(super) fn parse_listen(text: &str) -> Result<SocketAddr, String> {
    let text = text.trim();
    let loopback = |port: &str| {
        port.parse::<u16>()
            .map(|port| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port))
    };
    if let Ok(address) = text.parse::<SocketAddr>() {
        return Ok(address);
    }
    if let Ok(address) = loopback(text.strip_prefix(':').unwrap_or(text)) {
        return Ok(address);
    }
    if let Some((host, port)) = text.rsplit_once(':')
        && host.eq_ignore_ascii_case("localhost")
        && let Ok(address) = loopback(port)
    {
        return Ok(address);
    }
    Err(format!(
        "{text:?} is not an address to listen on; expected an IP address and a port such as \
         \"127.0.0.1:9811\" (this machine only), \"localhost:9811\" or \"9811\" (the same), or \
         \"0.0.0.0:9811\" (every interface, without authentication)"
    ))
}

/// One `allowed_hosts` entry: a host name or IP address, optionally with a port; no scheme,
/// path or wildcard (a wildcard would let in the names DNS rebinding uses).
pub(super) fn parse_allowed_host(text: &str) -> Result<String, String> {
    let text = text.trim();
    let example = "such as \"status.studio.example\" or \"proxy.internal:8080\"";
    if text.is_empty() {
        return Err(format!("empty: a host name {example}"));
    }
    if text.contains("://") || text.contains('/') {
        return Err(format!(
            "{text:?} is a URL; give the name the requests carry in their Host header, {example}"
        ));
    }
    if text.contains('*') {
        return Err(format!(
            "{text:?}: no wildcards: any name could then point a web page at this listener \
             (DNS rebinding); list each name, {example}"
        ));
    }
    let (name, port) = match text.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((name, "")) => (name, None),
            Some((name, port)) => (name, port.strip_prefix(':')),
            None => return Err(format!("{text:?}: an IPv6 address needs its closing ]")),
        },
        None => match text.rsplit_once(':') {
            Some((name, _)) if name.contains(':') => {
                return Err(format!(
                    "{text:?}: write an IPv6 address in brackets, [::1]"
                ));
            }
            Some((name, port)) => (name, Some(port)),
            None => (text, None),
        },
    };
    if let Some(port) = port
        && port.parse::<u16>().is_err()
    {
        return Err(format!("{text:?}: {port:?} is not a port"));
    }
    let is_ip = name.parse::<IpAddr>().is_ok();
    let is_name = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if !is_ip && !is_name {
        return Err(format!("{text:?} is not a host name, {example}"));
    }
    Ok(text.to_ascii_lowercase())
}

/// What `check` warns about the listener: an address other machines can reach, since it
/// answers without authentication; and an address that cannot be listened on now (a port
/// another program holds, an address this machine does not have), found by binding it for a
/// moment. A port held by the agent already running on this state dir is said, not warned.
pub fn listener_warnings(settings: &Settings) -> Vec<String> {
    let Some(http) = &settings.http else {
        return Vec::new();
    };
    let mut warnings = Vec::new();
    if !http.is_loopback() {
        warnings.push(format!(
            "http.listen = \"{}\" is reachable from other machines, and the listener has no \
             authentication: anyone who can connect to it sees the queue, the file names, the \
             video ids and the reasons files failed. Keep it on 127.0.0.1 (behind a reverse \
             proxy with a login, if others must see it) or restrict it with a firewall",
            http.listen
        ));
    }
    if http.listen.port() == 0 {
        warnings.push(format!(
            "http.listen = \"{}\": port 0 makes the system pick another port at every start \
             (the log says which); a monitor or Prometheus needs a fixed one, such as 9811",
            http.listen
        ));
        return warnings;
    }
    match std::net::TcpListener::bind(http.listen) {
        // Closed again at once: the agent binds it itself when it starts.
        Ok(listener) => drop(listener),
        Err(err) if err.kind() == std::io::ErrorKind::AddrInUse => {
            match running_agent(&settings.state_dir) {
                Some(pid) => warnings.push(format!(
                    "http.listen = \"{}\" is in use, most likely by the agent already running on \
                     this state dir (pid {pid}); if that is not it, another program holds the port",
                    http.listen
                )),
                None => warnings.push(format!(
                    "http.listen = \"{}\" is in use by another program: the agent would upload, \
                     but serve no metrics, health or status page until the port is free (it \
                     keeps trying); pick a free port",
                    http.listen
                )),
            }
        }
        Err(err) => warnings.push(format!(
            "http.listen = \"{}\" cannot be listened on: {err}; the agent would upload, but \
             serve no metrics, health or status page until it can",
            http.listen
        )),
    }
    warnings
}

/// The pid of the agent holding the state dir's lock, when that process is alive.
fn running_agent(state_dir: &std::path::Path) -> Option<u32> {
    let text = std::fs::read_to_string(state_dir.join(crate::store::LOCK_FILE_NAME)).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    if pid <= 0 {
        return None;
    }
    // SAFETY: signal 0 sends nothing; it only asks whether the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0
        || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    alive.then_some(pid as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_takes_addresses_localhost_and_a_bare_port_and_nothing_else() {
        let parsed = |text: &str| parse_listen(text).map(|a| a.to_string());
        assert_eq!(parsed("127.0.0.1:9811").unwrap(), "127.0.0.1:9811");
        assert_eq!(parsed("[::1]:9811").unwrap(), "[::1]:9811");
        assert_eq!(parsed("0.0.0.0:9811").unwrap(), "0.0.0.0:9811");
        assert_eq!(parsed("localhost:9811").unwrap(), "127.0.0.1:9811");
        assert_eq!(parsed("LocalHost:9811").unwrap(), "127.0.0.1:9811");
        assert_eq!(parsed("9811").unwrap(), "127.0.0.1:9811");
        assert_eq!(parsed(":9811").unwrap(), "127.0.0.1:9811");
        for bad in [
            "",
            "edit-bay-3:9811",
            "127.0.0.1",
            "127.0.0.1:99999",
            "localhost",
            "http://127.0.0.1:9811",
        ] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains("127.0.0.1:9811"), "{bad}: {err}");
        }
    }

    #[test]
    fn allowed_hosts_are_names_or_addresses_with_an_optional_port_and_no_wildcard() {
        for (text, expected) in [
            ("status.studio.example", "status.studio.example"),
            (" Proxy.Internal:8080 ", "proxy.internal:8080"),
            ("192.168.1.20", "192.168.1.20"),
            ("[fd00::7]:9811", "[fd00::7]:9811"),
            ("edit_bay-3", "edit_bay-3"),
        ] {
            assert_eq!(parse_allowed_host(text).as_deref(), Ok(expected), "{text}");
        }
        for (text, why) in [
            ("", "empty"),
            ("https://status.example", "is a URL"),
            ("status.example/x", "is a URL"),
            ("*.example", "no wildcards"),
            ("host:99999", "not a port"),
            ("fd00::7", "brackets"),
            ("bad name", "not a host name"),
        ] {
            let err = parse_allowed_host(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }
}
