//! A decrypted relay cell body: its header, then the message its command
//! names (BEGIN, EXTEND2, RESOLVE, SENDME, ...), for every command.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oxit::proto::relay_msg::{AnyRelayMsg, RelayCmd, parse_relay_body};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 509 {
        let mut body = [0u8; 509];
        body.copy_from_slice(&data[..509]);
        if let Ok((hdr, payload)) = parse_relay_body(&body) {
            let _ = AnyRelayMsg::decode(hdr.cmd, payload);
        }
    }
    if let Some((&cmd, payload)) = data.split_first() {
        let _ = AnyRelayMsg::decode(RelayCmd::from(cmd), payload);
    }
});
