//! The core stays pure: no async runtime, HTTP, XML, AMQP or Redis among its dependencies.

#[test]
fn core_depends_on_no_io_crate() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let deps = manifest
        .split("[dependencies]")
        .nth(1)
        .and_then(|rest| rest.split("\n[").next())
        .expect("a [dependencies] section");
    let names: Vec<&str> = deps
        .lines()
        .filter_map(|l| l.split(['=', '.']).next())
        .map(str::trim)
        .filter(|n| !n.is_empty() && !n.starts_with('#'))
        .collect();
    assert!(names.contains(&"chrono"), "parsed the section: {names:?}");
    for forbidden in [
        "tokio",
        "reqwest",
        "quick-xml",
        "redis",
        "lapin",
        "axum",
        "hyper",
        "redb",
    ] {
        assert!(
            !names.contains(&forbidden),
            "cgc-core must not depend on {forbidden}"
        );
    }
}
