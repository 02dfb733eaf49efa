//! Issue 17: the console in a real headless Chromium, driven over WebDriver
//! ([`crate::webdriver`]). Screenshots of the dashboard, a search and a message's detail
//! are saved under `target/console-screenshots/` (the ones in docs/ are copies).
//!
//! Without chromium and chromedriver these tests skip loudly; under `CI=true` they fail.

use std::path::PathBuf;

use hl7d::console::Role;

use crate::console::{principal, Setup};
use crate::support::tempdir;
use crate::webdriver::Driver;

/// Where the screenshots go.
fn screenshots() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
}

/// The pages with a stand-in caller (an operator): search by patient, open a message, see
/// its parked delivery, retry it through the confirmation page; every page fits a narrow
/// screen; screenshots of each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_finds_a_patient_and_retries_a_parked_delivery_in_a_browser() {
    let test = "an_operator_finds_a_patient_and_retries_a_parked_delivery_in_a_browser";
    let Some(driver) = Driver::start(test) else { return };
    let setup = Setup::start("browser-pages").await;
    let addr = setup.serve_as(principal("olga", Role::Operator)).await;
    let profile = tempdir("browser-profile");
    let browser = driver.session(profile.path()).await;
    let base = format!("http://{addr}");

    browser.goto(&format!("{base}/")).await;
    let listeners = browser.text(&browser.find("#listeners").await).await;
    assert!(listeners.contains("lab") && listeners.contains("plaintext"), "{listeners}");
    assert!(browser.text(&browser.find("#routes").await).await.contains("engine"));
    assert!(browser.text(&browser.find("#user").await).await.contains("olga (operator)"));
    browser.screenshot(&screenshots().join("dashboard.png")).await;

    // Search by patient from the form.
    browser.goto(&format!("{base}/messages")).await;
    browser.type_into(&browser.find("input[name=patient]").await, "P1").await;
    browser.click(&browser.find("#search button[type=submit]").await).await;
    browser.find("#results").await;
    assert!(browser.url().await.contains("patient=P1"), "{}", browser.url().await);
    let rows = browser.find_all("#results tbody tr").await;
    assert_eq!(rows.len(), 3);
    browser.screenshot(&screenshots().join("search.png")).await;

    // Open the oldest (message 1): its parked delivery, by word.
    browser.click(&browser.find("#results a[href='/messages/1']").await).await;
    let deliveries = browser.text(&browser.find("#deliveries").await).await;
    assert!(deliveries.contains("PARKED") || deliveries.contains("parked"), "{deliveries}");
    assert!(deliveries.contains("downstream refused: AR"));
    // The whole detail (header, ACK, deliveries, segments) in one picture.
    browser.resize(1280, 2000).await;
    browser.screenshot(&screenshots().join("detail.png")).await;
    browser.resize(1280, 800).await;

    // Retry: a confirmation first, then the outcome; the queue changed.
    browser.click(&browser.find("#deliveries button[data-action=retry]").await).await;
    let confirm = browser.text(&browser.find("#confirm-text").await).await;
    assert!(confirm.contains("send message 1 again on route engine"), "{confirm}");
    assert_eq!(setup.delivery_state(1, "engine"), "parked");
    browser.click(&browser.find("#confirm").await).await;
    let outcome = browser.text(&browser.find("#outcome").await).await;
    assert!(outcome.contains("released 1 parked delivery(ies) on route engine"), "{outcome}");
    assert_eq!(setup.delivery_state(1, "engine"), "pending");

    // A phone's width: nothing wider than the screen but the tables' own scroll boxes.
    browser.resize(390, 844).await;
    for path in ["/", "/messages?patient=P1", "/messages/1"] {
        browser.goto(&format!("{base}{path}")).await;
        let overflow = browser
            .execute("return document.documentElement.scrollWidth - document.documentElement.clientWidth;")
            .await;
        assert_eq!(overflow.as_i64(), Some(0), "{path} is wider than a narrow screen");
    }
    browser.screenshot(&screenshots().join("detail-narrow.png")).await;
    browser.quit().await;
}
