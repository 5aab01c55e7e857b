//! client → C tor middle → oxit exit, with an HTTP server behind the exit:
//! the path the lifecycle, bandwidth and accounting tests drive. The
//! middle starts on its own thread while oxit starts, so the two key
//! generations overlap.

use super::{HarnessError, HttpServer, OxitOptions, OxitProcess, TorProcess, TorRole};
use crate::client::{Handshake, HopSpec};

pub struct ExitPath {
    pub http: HttpServer,
    pub middle: TorProcess,
    pub oxit: OxitProcess,
    /// The middle (ntor), then oxit (ntor-v3).
    pub hops: [HopSpec; 2],
}

impl ExitPath {
    pub fn start(opts: &OxitOptions) -> Result<ExitPath, HarnessError> {
        let http = HttpServer::start()?;
        let middle = std::thread::spawn(|| TorProcess::start(TorRole::Middle));
        let oxit = OxitProcess::start(opts)?;
        let middle = middle.join().map_err(|_| HarnessError::NotReady {
            program: "tor".into(),
            detail: "the thread starting the C tor middle panicked".into(),
        })??;
        let hops = [middle.hop(Handshake::Ntor)?, oxit.hop(Handshake::NtorV3)?];
        Ok(ExitPath {
            http,
            middle,
            oxit,
            hops,
        })
    }

    /// The HTTP server's port.
    pub fn port(&self) -> u16 {
        self.http.addr().port()
    }
}
