use super::*;
use crate::journal::{summarize, Decided, Event, Http, Record, Tftp, TftpEnd};
use std::collections::VecDeque;

fn mac() -> MacAddr {
    MacAddr([0x52, 0x54, 0, 0x77, 0, 1])
}

fn records() -> VecDeque<Record> {
    let decided = Decided {
        stage: "iPXE script".into(),
        outcome: "profile live version 0123456789ab".into(),
        hostname: "node<1>".into(),
        profile: Some("live".into()),
        version: Some("0123456789ab".into()),
        arch: Some("x86_64".into()),
        arch_rule: "client (HTTP query)".into(),
        target_rule: "MAC database entry 52:54:00:77:00:01".into(),
        ignored: None,
    };
    VecDeque::from([
        Record {
            at: 1_000,
            mac: Some(mac()),
            ip: None,
            event: Event::Http(Http {
                method: "GET".into(),
                path: "/ipxe/script".into(),
                status: 200,
                bytes: 500,
                length: Some(500),
                duration_ms: 1,
                decision: Some(decided),
                note: None,
            }),
        },
        Record {
            at: 2_000,
            mac: Some(mac()),
            ip: None,
            event: Event::Tftp(Tftp {
                path: "<script>alert(1)</script>".into(),
                size: None,
                bytes: 0,
                blksize: 512,
                windowsize: 1,
                retransmits: 0,
                duration_ms: 0,
                end: TftpEnd::NotFound,
                decision: None,
            }),
        },
    ])
}

fn overview() -> Overview {
    let summary = summarize(mac(), &records(), None);
    Overview {
        now: 3_000,
        catalog: CatalogView {
            source: "/data/config".into(),
            overlay: None,
            version: "cafe0123".into(),
            loaded_at: 500,
            profiles: 2,
            machines: 5,
            dhcp_mode: "server".into(),
            reloads: vec![Reload { at: 2_500, ok: false, errors: vec!["machines.yaml:3:4: x: <bad>".into()] }],
        },
        machines: vec![summary],
        transfers: vec![],
        unattributed: vec![],
        journal: JournalInfo { machines_limit: 10, records_limit: 20, dropped: 0, file: None },
    }
}

#[test]
fn the_overview_lists_each_machine_with_its_stage_profile_and_version() {
    let html = render_overview(&overview()).unwrap();
    assert!(html.contains(r#"<a href="/status/machines/52:54:00:77:00:01">52:54:00:77:00:01</a>"#), "{html}");
    assert!(html.contains(r#"<td class="profile">live</td>"#), "{html}");
    assert!(html.contains(r#"<td class="mono version">0123456789ab</td>"#), "{html}");
    assert!(html.contains(r#"<meta http-equiv="refresh" content="5">"#));
    assert!(html.contains("refused, still serving the previous config"));
    assert!(!html.contains("<script"), "no script, and client text is escaped: {html}");
}

#[test]
fn client_supplied_text_is_escaped() {
    let html = render_overview(&overview()).unwrap();
    assert!(html.contains("node&lt;1&gt;"), "{html}");
    assert!(html.contains("&lt;bad&gt;"), "{html}");
    let page = MachinePage {
        summary: summarize(mac(), &records(), None),
        timeline: records().into(),
        explain: "a & b".into(),
    };
    let html = render_machine(&page).unwrap();
    assert!(html.contains("&lt;script&gt;alert(1)&lt;&#x2f;script&gt;"), "{html}");
    assert!(html.contains("a &amp; b"));
}

#[test]
fn a_machine_page_shows_its_timeline_newest_first_with_rules() {
    let page =
        MachinePage { summary: summarize(mac(), &records(), None), timeline: records().into(), explain: "x".into() };
    let html = render_machine(&page).unwrap();
    let tftp = html.find("data-step=\"other\"").unwrap();
    let http = html.find("data-step=\"config\"").unwrap();
    assert!(tftp < http, "newest first");
    assert!(html.contains("target by MAC database entry 52:54:00:77:00:01"), "{html}");
    let unknown = render_unknown_machine(mac(), "explained").unwrap();
    assert!(unknown.contains("no record of this machine") && unknown.contains("explained"), "{unknown}");
}

#[test]
fn the_machines_json_has_the_summary_fields() {
    let o = overview();
    let v = serde_json::to_value(MachinesJson { now: o.now, machines: &o.machines }).unwrap();
    let m = &v["machines"][0];
    assert_eq!(m["mac"], "52:54:00:77:00:01");
    assert_eq!(m["profile"], "live");
    assert_eq!(m["step"], "other");
    // A name outside what we hand out, answered "not found", is a probe, not an error.
    assert!(m["last_error"].is_null(), "{m}");
}
