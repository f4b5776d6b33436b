//! `[server]`: the drain period and the upgrade socket.

use super::Checker;
use crate::config::model::ServerConfig;
use crate::config::raw::RawServer;

const KEY_SOCKET: &str = "server.upgrade_socket";
/// `sun_path` holds 108 bytes, the last one a NUL.
const MAX_SOCKET_PATH: usize = 107;

impl Checker<'_> {
    pub(super) fn server(&mut self, raw: RawServer) -> ServerConfig {
        let defaults = ServerConfig::default();
        let drain_timeout = self.duration(
            "server.drain_timeout",
            raw.drain_timeout.as_ref(),
            defaults.drain_timeout,
        );
        let upgrade_socket = raw.upgrade_socket.map(|path| {
            let path = self.path(KEY_SOCKET, &path);
            if path.as_os_str().len() > MAX_SOCKET_PATH {
                self.error(
                    KEY_SOCKET,
                    format!(
                        "{}: too long for a unix socket (at most {MAX_SOCKET_PATH} bytes)",
                        path.display()
                    ),
                );
            }
            path
        });
        ServerConfig {
            drain_timeout,
            upgrade_socket,
        }
    }
}
