//! The integration tests' PostgreSQL variants are built `#[ignore]`d unless TEST_POSTGRES_URL
//! is set when they are built (`cfg(postgres_tests)`, see `tests/common/db.rs`), so that
//! without PostgreSQL the test runner counts them as ignored, not as passed.
fn main() {
    println!("cargo::rerun-if-env-changed=TEST_POSTGRES_URL");
    println!("cargo::rustc-check-cfg=cfg(postgres_tests)");
    if std::env::var_os("TEST_POSTGRES_URL").is_some_and(|url| !url.is_empty()) {
        println!("cargo::rustc-cfg=postgres_tests");
    }
}
