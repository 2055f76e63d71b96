//! A missing chromedriver fails the browser tests with the command that installs it; it never
//! skips them. (Its own test binary: it points `CHROMEDRIVER` at a path that does not exist.)

#[path = "common/browser.rs"]
mod browser;

#[tokio::test]
#[should_panic(expected = "apt-get install -y --no-install-recommends chromium chromium-driver")]
async fn a_missing_chromedriver_is_a_failure_with_the_install_command() {
    std::env::set_var("CHROMEDRIVER", "/nonexistent/chromedriver");
    let _ = browser::Browser::launch().await;
}
