//! What one DHCP exchange tells the operator: its count in the metrics, and (with the journal
//! on) a record with the client's facts, the reply and the decision behind it.

use crate::observe::Telemetry;
use appliance_core::catalog::DhcpMode;
use appliance_core::client::Client;
use appliance_core::dhcp::exchange::Handled;
use appliance_core::dhcp::reply::Port;
use appliance_core::journal::{message_words, Decided, Dhcp, Event};
use std::borrow::Cow;

/// Counts the exchange and journals it; `sent` is false when the reply could not be sent.
pub(super) fn exchange(t: &Telemetry, client: &Client, port: Port, mode: DhcpMode, h: &Handled, sent: bool) {
    let reply = h.reply.as_ref().filter(|_| sent).map(|(r, _)| message_words(r.kind));
    t.metrics.dhcp_answered(mode.as_str(), reply.as_deref());
    if !t.journal.enabled() {
        return;
    }
    // A plain OS renewing its lease beside us in proxy or off mode is not a boot.
    let boot_client = client.firmware != appliance_core::arch::Firmware::Unknown;
    if !(boot_client || reply.is_some() || h.leases_changed || mode == DhcpMode::Server) {
        return;
    }
    let address = h.reply.as_ref().map(|(r, _)| r.message.yiaddr()).filter(|a| !a.is_unspecified());
    let record = Dhcp {
        request: message_words(h.kind),
        reply,
        mode: Cow::Borrowed(mode.as_str()),
        port: match port {
            Port::Dhcp => 67,
            Port::Pxe => 4011,
        },
        firmware: Cow::Borrowed(client.firmware.as_str()),
        client_arch: client.client_arch_code,
        vendor_class: client.vendor_class.clone(),
        address,
        boot: h.reply.as_ref().and_then(|(r, _)| r.boot.as_ref()).map(|b| b.name().to_string()),
        decision: h.decision.as_ref().map(Decided::new),
        note: h.note.clone(),
    };
    t.journal.record(client.mac, address.or(client.ip), Event::Dhcp(record));
}
