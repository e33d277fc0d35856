use super::*;
use crate::protocol::{HeapProfile, ProcessIdentity, StackReport};

fn stack(pid: u32, comm: &str, identity: ProcessIdentity) -> StackReport {
    StackReport { comm: comm.into(), identity, ..StackReport::for_test(pid, "00ab", (100, 1), (100, 1), Vec::new()) }
}

#[test]
fn one_request_per_process_named_by_service() {
    let unit = ProcessIdentity { unit: Some("web api.service".into()), ..ProcessIdentity::default() };
    let boxed = ProcessIdentity {
        container_id: Some("ab".repeat(32)),
        container_name: Some("db-0".into()),
        ..ProcessIdentity::default()
    };
    let heap = HeapProfile {
        stacks: vec![stack(7, "web", unit.clone()), stack(9, "pg", boxed), stack(7, "web", unit)],
        ..HeapProfile::default()
    };
    let requests = ingest_requests(&heap, "h1", 100, 115).expect("encodes");
    assert_eq!(requests.len(), 2, "one per process");
    assert_eq!(requests[0].name, "web_api{host=h1,service=web_api,pid=7,systemd_unit=web_api.service}");
    assert_eq!(requests[1].name, format!("db-0{{host=h1,service=db-0,pid=9,container_id={}}}", "ab".repeat(32)));
    let query = requests[0].path_and_query.strip_prefix("/ingest?").expect("the ingest path");
    let params: Vec<(String, String)> = serde_urlencoded::from_str(query).expect("a query string");
    let get = |k: &str| params.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    assert_eq!(get("name"), Some(requests[0].name.as_str()));
    assert_eq!((get("from"), get("until"), get("format")), (Some("100"), Some("115"), Some("pprof")));
    let body = String::from_utf8_lossy(&requests[0].body);
    let boundary = requests[0].content_type();
    let boundary = boundary.strip_prefix("multipart/form-data; boundary=").expect("multipart");
    assert!(body.starts_with(&format!("--{boundary}\r\nContent-Disposition: form-data; name=\"profile\"")), "{body}");
    assert!(body.ends_with(&format!("\r\n--{boundary}--\r\n")), "{body}");
}

#[test]
fn credentials_files() {
    assert_eq!(authorization("user:secret\n", true).expect("basic"), "Basic dXNlcjpzZWNyZXQ=");
    assert_eq!(authorization("tok-123\n", false).expect("bearer"), "Bearer tok-123");
    assert!(authorization("\n", false).is_err());
    assert!(authorization("no-colon", true).is_err());
}
