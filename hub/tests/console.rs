//! The admin console in a real headless Chromium, driven through chromedriver (WebDriver), on a
//! real hub process: an owner signs in and builds the organisation, an admin approves, invites,
//! makes groups and issues a key, a group admin sees only their group, a refused action shows
//! its rule, and the event log shows each step. With `SWITCHBOARD_CONSOLE_SHOTS=DIR` the test
//! also saves screenshots of the main pages there (docs/console/ holds the ones the docs show).
//!
//! Chromium and chromedriver come from `deploy/install-deps.sh` (Debian's `chromium` and
//! `chromium-driver`).

mod common;

use std::{
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command as Process, Stdio},
    time::Duration,
};

use common::*;
use fantoccini::{Client as Browser, ClientBuilder, Locator, key::Key};
use serde_json::{Value, json};
use switchboard_hub::org::{Change, Command, OrgId};

const OWNER: &str = "max@example.org";
const ADMIN: &str = "ann@example.org";
const REGISTRANT: &str = "rob@example.org";
const GROUP_ADMIN: &str = "gil@example.org";
const GUEST: &str = "gus@elsewhere.net";
const LEAVER: &str = "dan@example.org";
const STRANGER: &str = "eve@example.org";

/// chromedriver on a free loopback port, and a headless Chromium session through it.
struct Driver {
    process: Child,
    browser: Browser,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    /// Kills chromedriver and the browsers it started (its process group): a test that fails
    /// midway leaves no Chromium behind.
    fn drop(&mut self) {
        let group = format!("-{}", self.process.id());
        let _ = Process::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.process.kill();
        let _ = self.process.wait();
    }
}

fn chromedriver() -> &'static str {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromedriver is missing: run deploy/install-deps.sh (Debian's chromium-driver)")
}

async fn driver() -> Driver {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let process = Process::new(chromedriver())
        .arg(format!("--port={port}"))
        .process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let profile = tempfile::tempdir().unwrap();
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000", format!("--user-data-dir={}", profile.path().display())],
        }),
    );
    let url = format!("http://127.0.0.1:{port}");
    let mut last = None;
    for _ in 0..100 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector).capabilities(capabilities.clone()).connect(&url).await {
            Ok(browser) => return Driver { process, browser, _profile: profile },
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no browser session through chromedriver: {last:?}");
}

/// The page's text.
async fn text(browser: &Browser) -> String {
    browser.find(Locator::Css("body")).await.unwrap().text().await.unwrap()
}

/// The text of the message an action left (`.flash`).
async fn flash(browser: &Browser) -> String {
    let found =
        browser.wait().at_most(Duration::from_secs(10)).for_element(Locator::Css(".flash")).await;
    match found {
        Ok(element) => element.text().await.unwrap(),
        Err(e) => panic!(
            "no message on {}: {e}\n{}",
            browser.current_url().await.unwrap(),
            text(browser).await
        ),
    }
}

/// Fills the field labelled by id `id` with `value`.
async fn fill(browser: &Browser, id: &str, value: &str) {
    let field = browser.find(Locator::Id(id)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(value).await.unwrap();
}

/// Chooses the option whose text contains `text` in the select of id `id`.
async fn choose(browser: &Browser, id: &str, text: &str) {
    let select = browser.find(Locator::Id(id)).await.unwrap();
    let options = select.find_all(Locator::Css("option")).await.unwrap();
    for option in options {
        if option.text().await.unwrap().contains(text) {
            option.click().await.unwrap();
            return;
        }
    }
    panic!("no option {text:?} in #{id}");
}

/// Clicks the button whose accessible name (`aria-label`, else text) is `label`.
async fn press(browser: &Browser, label: &str) {
    let buttons = browser.find_all(Locator::Css("button")).await.unwrap();
    for button in buttons {
        let name = match button.attr("aria-label").await.unwrap() {
            Some(name) => name,
            None => button.text().await.unwrap(),
        };
        if name == label {
            let page = browser.find(Locator::Css("html")).await.unwrap();
            button.click().await.unwrap();
            replaced(browser, page).await;
            return;
        }
    }
    panic!("no button {label:?} on {}", browser.current_url().await.unwrap());
}

/// Waits until `page` (the `html` element of the page a form was sent from) is gone: the
/// answer's page has replaced it.
async fn replaced(browser: &Browser, page: fantoccini::elements::Element) {
    for _ in 0..200 {
        if page.tag_name().await.is_err() {
            browser.wait().for_element(Locator::Css("body")).await.unwrap();
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the form's answer never came: {}", browser.current_url().await.unwrap());
}

/// Sends the form of field `id` with Enter, from the keyboard.
async fn enter(browser: &Browser, id: &str) {
    let page = browser.find(Locator::Css("html")).await.unwrap();
    let field = browser.find(Locator::Id(id)).await.unwrap();
    field.send_keys(&char::from(Key::Enter).to_string()).await.unwrap();
    replaced(browser, page).await;
}

/// Every visible form field of the page has a label (a `<label for>`, or an `aria-label`), and
/// no script runs on the page.
async fn check_page(browser: &Browser) {
    let unlabelled = browser
        .execute(
            "return [...document.querySelectorAll('input:not([type=hidden]), select, textarea')]
                .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label'))
                .map(e => e.name || e.id);",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        unlabelled,
        json!([]),
        "unlabelled fields on {}",
        browser.current_url().await.unwrap()
    );
    let scripts = browser.execute("return document.scripts.length;", vec![]).await.unwrap();
    assert_eq!(scripts, json!(0));
}

async fn sign_in(browser: &Browser, console: &str, token: &str) {
    browser.goto(&format!("{console}/sign-in")).await.unwrap();
    // The keyboard alone: the field, then Enter.
    fill(browser, "token", token).await;
    enter(browser, "token").await;
    browser.wait().for_element(Locator::Css("header .who")).await.unwrap();
}

async fn sign_out(browser: &Browser) {
    press(browser, "Sign out").await;
    browser.wait().for_element(Locator::Id("token")).await.unwrap();
}

/// Saves a screenshot of the page as `name`.png if screenshots are asked for.
async fn shot(browser: &Browser, name: &str) {
    let Some(dir) = std::env::var_os("SWITCHBOARD_CONSOLE_SHOTS") else { return };
    let dir = PathBuf::from(dir);
    std::fs::create_dir_all(&dir).unwrap();
    let png = browser.screenshot().await.unwrap();
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// A real `width` x `height` PNG of one colour (stored, not compressed), which a browser shows.
fn png(width: u32, height: u32) -> Vec<u8> {
    fn crc(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&(data.len() as u32).to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..height {
        raw.push(0);
        for x in 0..width {
            let stripe = (x / 64 + y / 64) % 2 == 0;
            raw.extend_from_slice(if stripe { &[11, 92, 173] } else { &[240, 180, 0] });
        }
    }
    // zlib: a header, stored deflate blocks, the Adler-32 of the data.
    let mut zlib = vec![0x78, 0x01];
    let blocks: Vec<&[u8]> = raw.chunks(65_535).collect();
    for (i, block) in blocks.iter().enumerate() {
        zlib.push(u8::from(i + 1 == blocks.len()));
        let len = block.len() as u16;
        zlib.extend_from_slice(&len.to_le_bytes());
        zlib.extend_from_slice(&(!len).to_le_bytes());
        zlib.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &byte in &raw {
        a = (a + u32::from(byte)) % 65_521;
        b = (b + a) % 65_521;
    }
    zlib.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut header = width.to_be_bytes().to_vec();
    header.extend_from_slice(&height.to_be_bytes());
    header.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &zlib);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// The organisations the test works in: Example (example.org) and Partner (partner.net).
async fn orgs(hub: &HubProcess) -> (OrgId, OrgId) {
    let operator = hub.admin_client();
    let mut ids = Vec::new();
    for (name, owner, domain) in
        [("Example", OWNER, "example.org"), ("Partner", "pat@partner.net", "partner.net")]
    {
        let _ = operator.add_user(owner).await;
        let created = operator
            .org(&Command::CreateOrg {
                name: name.into(),
                owner: owner.into(),
                domain: domain.into(),
                line: format!("main@{domain}"),
                seat_limit: Some(20),
            })
            .await
            .unwrap();
        let Change::OrgCreated { org, .. } = created.change else { panic!("{created:?}") };
        ids.push(org.id);
    }
    for user in [ADMIN, REGISTRANT, GROUP_ADMIN, GUEST, STRANGER] {
        operator.add_user(user).await.unwrap();
    }
    // The admin-to-be is a member (the owner of a group of the organisation must be one), and
    // so is one who will leave.
    let owner = hub.as_user(OWNER).await;
    for user in [ADMIN, LEAVER] {
        hub.as_user(user).await.org(&Command::Register { org: ids[0] }).await.unwrap();
        owner.org(&Command::Approve { org: ids[0], user: user.into() }).await.unwrap();
    }
    (ids[0], ids[1])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_organisation_runs_itself_from_the_console_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    // The owner proves a second domain with the TXT record the console shows: a real DNS server
    // serves it (the organisation is the hub's first, id 1).
    let record = switchboard_hub::org::OrgState::domain_token(OrgId(1), "example.net");
    let _dns = Dns::start([127, 0, 0, 98], &[("_switchboard.example.net", &record)]);
    let hub =
        HubProcess::start_configured(dir.path(), "[org]\ndns_servers = [\"127.0.0.98:53\"]\n");
    let console = format!("http://{}/console", hub.admin);
    let (example, partner) = orgs(&hub).await;
    assert_eq!(example, OrgId(1));
    let driver = driver().await;
    let browser = &driver.browser;

    // A wrong token is refused on the sign-in page, with the API's reason.
    browser.goto(&console).await.unwrap();
    assert!(browser.current_url().await.unwrap().path().ends_with("/console/sign-in"));
    fill(browser, "token", "not-a-token").await;
    press(browser, "Sign in").await;
    assert!(flash(browser).await.contains("unknown token"), "{}", text(browser).await);
    check_page(browser).await;

    // The owner signs in, creates units and names an admin.
    let max = hub.token(OWNER).await;
    sign_in(browser, &console, &max).await;
    assert!(text(browser).await.contains("Example"));
    browser.goto(&format!("{console}/org/{}", example.0)).await.unwrap();
    for (name, line) in [("Sales", "sales@example.org"), ("Support", "support@example.org")] {
        choose(browser, "parent", "main@example.org").await;
        fill(browser, "unit-name", name).await;
        fill(browser, "unit-line", line).await;
        press(browser, "Create the unit").await;
        assert!(flash(browser).await.starts_with("Done: create unit"), "{}", flash(browser).await);
    }
    fill(browser, "domain", "example.net").await;
    press(browser, "Add").await;
    assert_eq!(flash(browser).await, "Done: add domain example.net.");
    let domains =
        browser.find(Locator::Css("section[aria-labelledby=domains] table")).await.unwrap();
    let shown = domains.text().await.unwrap();
    assert!(shown.contains("waiting for its DNS record"), "{shown}");
    assert!(shown.contains(&format!("_switchboard.example.net TXT {record}")), "{shown}");
    press(browser, "Verify example.net").await;
    assert_eq!(flash(browser).await, "Done: verify domain example.net.");
    let domains =
        browser.find(Locator::Css("section[aria-labelledby=domains] table")).await.unwrap();
    let shown = domains.text().await.unwrap();
    assert!(shown.contains("example.net verified") && !shown.contains("waiting"), "{shown}");
    fill(browser, "admin", ADMIN).await;
    press(browser, "Name admin").await;
    assert_eq!(flash(browser).await, format!("Done: name admin {ADMIN}."));
    let page = text(browser).await;
    assert!(page.contains("sales@example.org") && page.contains("support@example.org"));
    assert!(page.contains("Admins (1 of 5)") && page.contains(ADMIN), "{page}");

    // A logo under 512 x 512 is refused with the reason; a big enough one is shown.
    let small = dir.path().join("small.png");
    let big = dir.path().join("logo.png");
    std::fs::write(&small, png(200, 100)).unwrap();
    std::fs::write(&big, png(512, 512)).unwrap();
    for (file, expected) in [
        (&small, "the image is 200 x 100 pixels; a logo needs at least 512 x 512"),
        (&big, "Done: the logo is set."),
    ] {
        browser.find(Locator::Css("details summary")).await.unwrap().click().await.unwrap();
        let input = browser.find(Locator::Css("input[type=file]")).await.unwrap();
        input.send_keys(file.to_str().unwrap()).await.unwrap();
        press(browser, "Upload the logo").await;
        assert!(flash(browser).await.contains(expected), "{}", flash(browser).await);
    }
    let logo = browser.find(Locator::Css(".unit img")).await.unwrap();
    let width = browser
        .execute("return arguments[0].naturalWidth;", vec![serde_json::to_value(&logo).unwrap()])
        .await
        .unwrap();
    assert_eq!(width, json!(512), "the uploaded logo is served and shown");
    check_page(browser).await;
    shot(browser, "overview").await;
    sign_out(browser).await;

    // Someone registers on their own (from their device's app, through the API); a group
    // admin-to-be is a member already.
    let rob = hub.as_user(REGISTRANT).await;
    rob.org(&Command::Register { org: example }).await.unwrap();
    let eve = hub.as_user(STRANGER).await;
    eve.org(&Command::Register { org: example }).await.unwrap();
    let gil = hub.as_user(GROUP_ADMIN).await;
    gil.org(&Command::Register { org: example }).await.unwrap();
    hub.as_user(OWNER)
        .await
        .org(&Command::Approve { org: example, user: GROUP_ADMIN.into() })
        .await
        .unwrap();

    // The admin approves the registration.
    let ann = hub.token(ADMIN).await;
    sign_in(browser, &console, &ann).await;
    browser.goto(&format!("{console}/org/{}/approvals", example.0)).await.unwrap();
    assert!(text(browser).await.contains(REGISTRANT));
    check_page(browser).await;
    shot(browser, "approvals").await;
    press(browser, &format!("Approve {REGISTRANT}")).await;
    assert_eq!(flash(browser).await, format!("Done: approve {REGISTRANT}."));
    // ... and declines one they do not know.
    press(browser, &format!("Decline {STRANGER}")).await;
    assert_eq!(flash(browser).await, format!("Done: deactivate {STRANGER}."));
    assert!(text(browser).await.contains("No registration waits for approval."));

    // ... moves them to Sales, and invites a guest (and sends a new code).
    browser.goto(&format!("{console}/org/{}/members", example.0)).await.unwrap();
    let unit = browser
        .find(Locator::Css(&format!("select[aria-label='Unit for {REGISTRANT}']")))
        .await
        .unwrap();
    unit.select_by_label("Sales").await.unwrap();
    press(browser, &format!("Move {REGISTRANT}")).await;
    assert!(flash(browser).await.starts_with("Done: assign"), "{}", flash(browser).await);
    fill(browser, "i-user", GUEST).await;
    browser.find(Locator::Id("i-guest")).await.unwrap().click().await.unwrap();
    press(browser, "Invite").await;
    let invited = flash(browser).await;
    assert!(invited.starts_with(&format!("Invited {GUEST}: code ")), "{invited}");
    press(browser, &format!("Send a new code to {GUEST}")).await;
    let again = flash(browser).await;
    assert!(again.starts_with(&format!("Invited {GUEST}")) && again != invited, "{again}");
    shot(browser, "members").await;
    // The filters: pending invitations aside, active members of Sales are Rob alone.
    browser
        .goto(&format!(
            "{console}/org/{}/members?status=active&unit=sales%40example.org",
            example.0
        ))
        .await
        .unwrap();
    let table =
        browser.find(Locator::Css("table.members tbody")).await.unwrap().text().await.unwrap();
    assert!(
        table.contains(REGISTRANT) && !table.contains(GROUP_ADMIN) && !table.contains(OWNER),
        "{table}"
    );
    check_page(browser).await;

    // ... creates a group of the organisation and an anonymous one, and fills them.
    browser.goto(&format!("{console}/groups")).await.unwrap();
    for (name, anonymous) in [("#helpdesk", false), ("#whistle", true)] {
        fill(browser, "g-name", name).await;
        choose(browser, "g-org", "Example").await;
        choose(browser, "g-scope", "account").await;
        if anonymous {
            browser.find(Locator::Id("g-anon")).await.unwrap().click().await.unwrap();
        }
        press(browser, "Create the group").await;
        assert_eq!(flash(browser).await, format!("Done: create group {name}, account."));
    }
    for (group, user) in
        [("#helpdesk", REGISTRANT), ("#whistle", REGISTRANT), ("#whistle", "pat@partner.net")]
    {
        fill(browser, &format!("add-{group}"), user).await;
        enter(browser, &format!("add-{group}")).await;
        assert_eq!(flash(browser).await, format!("Done: add group member {user}, {group}."));
    }
    check_page(browser).await;
    shot(browser, "groups").await;
    // A group is deleted in two steps: the disclosure, then the button.
    fill(browser, "g-name", "#temp").await;
    press(browser, "Create the group").await;
    let summaries = browser.find_all(Locator::Css("details summary")).await.unwrap();
    for summary in summaries {
        if summary.text().await.unwrap() == "Delete #temp…" {
            summary.click().await.unwrap();
        }
    }
    press(browser, "Delete for good #temp").await;
    assert_eq!(flash(browser).await, "Done: delete group #temp.");
    let left = browser.find_all(Locator::Css("section.group h2")).await.unwrap();
    let mut names = Vec::new();
    for heading in left {
        names.push(heading.text().await.unwrap());
    }
    assert_eq!(names, ["#helpdesk", "#whistle"]);

    // ... deactivates a member who left, and deletes them with an heir.
    browser.goto(&format!("{console}/org/{}/members", example.0)).await.unwrap();
    for (action, done) in [
        ("Make guest", "change member type"),
        ("Make member", "change member type"),
        ("Deactivate", "deactivate"),
        ("Reactivate", "reactivate"),
        ("Deactivate", "deactivate"),
    ] {
        press(browser, &format!("{action} {LEAVER}")).await;
        assert_eq!(flash(browser).await, format!("Done: {done} {LEAVER}."));
    }
    let heir = browser
        .find(Locator::Css(&format!("input[aria-label='Who takes over from {LEAVER}']")))
        .await
        .unwrap();
    heir.send_keys(ADMIN).await.unwrap();
    press(browser, &format!("Delete {LEAVER}")).await;
    assert_eq!(flash(browser).await, format!("Done: delete member {LEAVER}."));
    let table = browser.find(Locator::Css("table.members")).await.unwrap().text().await.unwrap();
    assert!(!table.contains(LEAVER), "{table}");

    // ... names a group admin of #helpdesk.
    browser.goto(&format!("{console}/org/{}", example.0)).await.unwrap();
    fill(browser, "ga-user", GROUP_ADMIN).await;
    fill(browser, "ga-group", "#helpdesk").await;
    press(browser, "Name group admin").await;
    assert_eq!(flash(browser).await, format!("Done: name group admin {GROUP_ADMIN}, #helpdesk."));

    // ... and issues a key to the line of Sales to the partner organisation.
    browser.goto(&format!("{console}/org/{}/keys", example.0)).await.unwrap();
    choose(browser, "k-unit", "Sales").await;
    fill(browser, "k-to", &partner.0.to_string()).await;
    let expires = browser.find(Locator::Id("k-exp")).await.unwrap();
    browser
        .execute(
            "arguments[0].value = '2030-12-31';",
            vec![serde_json::to_value(&expires).unwrap()],
        )
        .await
        .unwrap();
    press(browser, "Issue the key").await;
    assert!(flash(browser).await.starts_with("Done: issue key"), "{}", flash(browser).await);
    let issued = text(browser).await;
    assert!(
        issued.contains("sales@example.org")
            && issued.contains("2030-12-31")
            && issued.contains("working"),
        "{issued}"
    );
    check_page(browser).await;
    shot(browser, "keys").await;
    sign_out(browser).await;

    // The group admin sees only their group, and a refused action shows its rule.
    let gil_token = hub.token(GROUP_ADMIN).await;
    sign_in(browser, &console, &gil_token).await;
    browser.goto(&format!("{console}/groups")).await.unwrap();
    let groups = text(browser).await;
    assert!(groups.contains("#helpdesk") && groups.contains(REGISTRANT), "{groups}");
    assert!(!groups.contains("#whistle"), "a group admin sees only their groups: {groups}");
    // A guest is no member a group admin may add.
    fill(browser, "add-#helpdesk", GUEST).await;
    press(browser, "Add").await;
    let refusal = flash(browser).await;
    assert_eq!(
        refusal,
        "Refused: not allowed: a group admin assigns only active members of the group's organisation"
    );
    check_page(browser).await;
    shot(browser, "refused").await;
    // The members page is not theirs: it is not offered, and asked for, it says the rule.
    browser.goto(&format!("{console}/org/{}", example.0)).await.unwrap();
    assert!(browser.find(Locator::LinkText("Members")).await.is_err());
    browser.goto(&format!("{console}/org/{}/members", example.0)).await.unwrap();
    assert!(flash(browser).await.contains("not allowed: admins see the organisation's members"));
    sign_out(browser).await;

    // A member of the anonymous group does not see its other members.
    let rob_token = hub.token(REGISTRANT).await;
    sign_in(browser, &console, &rob_token).await;
    browser.goto(&format!("{console}/groups")).await.unwrap();
    let groups = text(browser).await;
    assert!(groups.contains("#whistle") && groups.contains("hidden"), "{groups}");
    assert!(!groups.contains("pat@partner.net"), "an anonymous group's member is shown: {groups}");
    sign_out(browser).await;

    // The event log shows each step, and its search finds them.
    sign_in(browser, &console, &max).await;
    browser.goto(&format!("{console}/org/{}/events", example.0)).await.unwrap();
    let log = text(browser).await;
    for step in [
        "unit created",
        "name admin",
        "set logo",
        "registered",
        "approve",
        "assign",
        "invite",
        "create group",
        "add group member",
        "name group admin",
        "key issued",
    ] {
        assert!(log.contains(step), "the log lacks {step:?}: {log}");
    }
    check_page(browser).await;
    shot(browser, "events").await;
    fill(browser, "q", "whistle").await;
    press(browser, "Search").await;
    let found =
        browser.find(Locator::Css("table.events tbody")).await.unwrap().text().await.unwrap();
    assert!(
        found.contains("create group")
            && found.contains("#whistle")
            && !found.contains("key issued"),
        "{found}"
    );
    sign_out(browser).await;

    // The operator sees the hub: its health from the metrics, the organisations, their seats.
    let operator = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    sign_in(browser, &console, operator.trim()).await;
    browser.goto(&format!("{console}/hub")).await.unwrap();
    let page = text(browser).await;
    assert!(
        page.contains("Devices connected") && page.contains("Messages held (backlog)"),
        "{page}"
    );
    assert!(page.contains("Example") && page.contains("Partner"), "{page}");
    check_page(browser).await;
    shot(browser, "hub").await;

    // The operator runs the hub, not the organisation's membership: the API refuses them the
    // members, and the console does not offer the page.
    browser.goto(&format!("{console}/org/{}", example.0)).await.unwrap();
    assert!(browser.find(Locator::LinkText("Members")).await.is_err());
    assert!(browser.find(Locator::LinkText("Event log")).await.is_ok());
    sign_out(browser).await;

    // At phone width no page scrolls sideways.
    sign_in(browser, &console, &ann).await;
    browser.set_window_size(390, 844).await.unwrap();
    for path in [
        format!("/org/{}", example.0),
        format!("/org/{}/members", example.0),
        format!("/org/{}/keys", example.0),
        format!("/org/{}/events", example.0),
        "/groups".into(),
    ] {
        browser.goto(&format!("{console}{path}")).await.unwrap();
        let wide = browser
            .execute("return document.documentElement.scrollWidth > window.innerWidth + 1;", vec![])
            .await
            .unwrap();
        assert_eq!(wide, json!(false), "{path} scrolls sideways at phone width");
    }
    browser.goto(&format!("{console}/org/{}/members", example.0)).await.unwrap();
    shot(browser, "members-phone").await;
    driver.browser.clone().close().await.unwrap();
}

/// A raw HTTP/1.1 exchange with the admin listener: the status, the headers (lower-case names)
/// and the body.
async fn http(hub: &HubProcess, head: &str, body: &str) -> (u16, Vec<(String, String)>, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(hub.admin).await.unwrap();
    let request = format!(
        "{head}\r\nhost: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        hub.admin,
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer).into_owned();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
        .collect();
    (status, headers, body.to_string())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers.iter().filter(|(k, _)| k == name).map(|(_, v)| v.as_str()).collect()
}

#[tokio::test]
async fn the_console_keeps_its_token_from_scripts_and_other_sites_and_runs_no_script() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let (example, _) = orgs(&hub).await;
    let max = hub.token(OWNER).await;
    let form = "application/x-www-form-urlencoded";

    // Signing in sets the token in an HttpOnly, SameSite=Strict cookie of the console's path.
    let (status, headers, _) = http(
        &hub,
        &format!("POST /console/sign-in HTTP/1.1\r\ncontent-type: {form}"),
        &format!("token={max}"),
    )
    .await;
    assert_eq!(status, 303);
    let cookie = header(&headers, "set-cookie")[0];
    assert_eq!(
        cookie,
        format!("switchboard_console={max}; Path=/console; HttpOnly; SameSite=Strict")
    );

    // Every page carries the policy, which allows no script, and has no script.
    let cookie = format!("cookie: switchboard_console={max}");
    for path in [
        "/console",
        &format!("/console/org/{}", example.0),
        &format!("/console/org/{}/members", example.0),
        "/console/groups",
        "/console/sign-in",
    ] {
        let (status, headers, body) =
            http(&hub, &format!("GET {path} HTTP/1.1\r\n{cookie}"), "").await;
        assert!(status == 200 || status == 303, "{path}: {status}");
        assert_eq!(
            header(&headers, "content-security-policy"),
            [switchboard_hub::console::CONTENT_SECURITY_POLICY],
            "{path}"
        );
        assert!(!switchboard_hub::console::CONTENT_SECURITY_POLICY.contains("script-src"));
        assert!(
            switchboard_hub::console::CONTENT_SECURITY_POLICY.starts_with("default-src 'none'")
        );
        assert!(
            !body.contains("<script") && !body.contains(" style=") && !body.contains("onclick"),
            "{path}"
        );
    }

    // Unknown paths: the console's own answer a page; the API's keep the API's JSON error.
    let (status, headers, body) =
        http(&hub, &format!("GET /console/nowhere HTTP/1.1\r\n{cookie}"), "").await;
    assert_eq!(status, 404);
    assert!(
        header(&headers, "content-type")[0].starts_with("text/html")
            && body.contains("No such page")
    );
    let (status, headers, body) =
        http(&hub, &format!("GET /v1/nowhere HTTP/1.1\r\nauthorization: Bearer {max}"), "").await;
    assert_eq!(status, 404);
    assert_eq!(header(&headers, "content-type"), ["application/json"]);
    assert_eq!(body, r#"{"error":"no such route: GET /v1/nowhere"}"#);

    // A state-changing form without the CSRF token, or from another site, changes nothing.
    let (_, _, page) =
        http(&hub, &format!("GET /console/org/{} HTTP/1.1\r\n{cookie}", example.0), "").await;
    let csrf =
        page.split("name=\"csrf\" value=\"").nth(1).unwrap().split('"').next().unwrap().to_string();
    let overview: Value = hub
        .as_user(OWNER)
        .await
        .request("GET", &format!("/v1/org/overview?org={}", example.0), None)
        .await
        .unwrap();
    let root = overview["units"][0]["id"].as_u64().unwrap();
    let create = |csrf: &str, line: &str| {
        format!(
            "csrf={csrf}&back=%2Fconsole&command=create_unit&org={}&parent={root}&name=X&line={line}%40example.org",
            example.0
        )
    };
    let post = format!("POST /console/do/org HTTP/1.1\r\ncontent-type: {form}\r\n{cookie}");
    let (status, _, _) = http(&hub, &post, &create("", "forged")).await;
    assert_eq!(status, 403, "no CSRF token");
    let (status, _, _) = http(&hub, &post, &create(&"0".repeat(32), "forged2")).await;
    assert_eq!(status, 403, "a wrong CSRF token");
    let cross = format!("{post}\r\norigin: http://evil.example");
    let (status, _, _) = http(&hub, &cross, &create(&csrf, "forged3")).await;
    assert_eq!(status, 403, "another site's origin");
    // Another user's CSRF token does not pass for this one's.
    let ann = hub.token(ADMIN).await;
    let (_, _, ann_page) = http(
        &hub,
        &format!("GET /console/groups HTTP/1.1\r\ncookie: switchboard_console={ann}"),
        "",
    )
    .await;
    let ann_csrf = ann_page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    assert_ne!(ann_csrf, csrf);
    let (status, _, _) = http(&hub, &post, &create(&ann_csrf, "forged4")).await;
    assert_eq!(status, 403, "another session's CSRF token");
    let overview: Value = hub
        .as_user(OWNER)
        .await
        .request("GET", &format!("/v1/org/overview?org={}", example.0), None)
        .await
        .unwrap();
    assert_eq!(
        overview["units"].as_array().unwrap().len(),
        1,
        "no forged unit was made: {overview}"
    );

    // With the right token, from the console's own origin, it works; the answer returns to a
    // console page only, whatever `back` says.
    let own = format!("{post}\r\norigin: http://{}", hub.admin);
    let body =
        create(&csrf, "real").replace("back=%2Fconsole", "back=https%3A%2F%2Fevil.example%2F");
    let (status, headers, _) = http(&hub, &own, &body).await;
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), ["/console"]);
    let flash =
        header(&headers, "set-cookie").into_iter().find(|c| c.starts_with("switchboard_flash=o"));
    let flash = flash.unwrap_or_else(|| panic!("no success message: {headers:?}"));
    assert!(flash.contains("HttpOnly; SameSite=Strict"), "{flash}");

    // A token that does not work (any more) sends the browser to sign in, and the cookie is
    // cleared.
    let stale = "cookie: switchboard_console=0123456789abcdef";
    let (status, headers, _) =
        http(&hub, &format!("GET /console/groups HTTP/1.1\r\n{stale}"), "").await;
    assert_eq!(status, 303);
    assert_eq!(header(&headers, "location"), ["/console/sign-in"]);
    assert!(
        header(&headers, "set-cookie")[0].starts_with(
            "switchboard_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"
        )
    );

    // Wrong tokens count as failed authentications: the listener's back-off stops guessing.
    let mut statuses = Vec::new();
    for i in 0..12 {
        let (status, _, _) = http(
            &hub,
            &format!("POST /console/sign-in HTTP/1.1\r\ncontent-type: {form}"),
            &format!("token=guess{i}"),
        )
        .await;
        statuses.push(status);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 401).count(), 10, "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 429, "{statuses:?}");
}

/// A refusal's status and text.
async fn refused(client: &switchboard_hub::client::admin::AdminClient, path: &str) -> String {
    match client.request("GET", path, None).await {
        Ok(answer) => panic!("{path} answered {answer}"),
        Err(e) => e.to_string(),
    }
}

#[tokio::test]
async fn the_views_the_console_reads_show_each_caller_only_what_the_rules_allow() {
    let dir = tempfile::tempdir().unwrap();
    let hub = HubProcess::start(dir.path());
    let (example, partner) = orgs(&hub).await;
    let max = hub.as_user(OWNER).await;
    let ann = hub.as_user(ADMIN).await;
    max.org(&Command::NameAdmin { org: example, user: ADMIN.into() }).await.unwrap();
    let rob = hub.as_user(REGISTRANT).await;
    rob.org(&Command::Register { org: example }).await.unwrap();
    max.org(&Command::Approve { org: example, user: REGISTRANT.into() }).await.unwrap();
    let pat = hub.as_user("pat@partner.net").await;
    let overview = format!("/v1/org/overview?org={}", example.0);

    // Who each token is: the owner, an admin, a plain member, the operator.
    let me = |v: Value| {
        v["orgs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (o["org"].as_u64().unwrap(), o["role"].clone(), o["manages_members"].clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        me(max.request("GET", "/v1/me", None).await.unwrap()),
        [(example.0, json!("owner"), json!(true))]
    );
    assert_eq!(
        me(ann.request("GET", "/v1/me", None).await.unwrap()),
        [(example.0, json!("admin"), json!(true))]
    );
    assert_eq!(
        me(rob.request("GET", "/v1/me", None).await.unwrap()),
        [(example.0, json!("member"), json!(false))]
    );
    let operator = hub.admin_client().request("GET", "/v1/me", None).await.unwrap();
    assert_eq!(operator["actor"], "operator");
    assert_eq!(operator["orgs"].as_array().unwrap().len(), 2);

    // The overview: the owner and admins and the operator; not a plain member, nor another
    // organisation's owner, nor (soon) a deactivated admin.
    assert_eq!(
        max.request("GET", &overview, None).await.unwrap()["units"][0]["line"],
        "main@example.org"
    );
    assert_eq!(ann.request("GET", &overview, None).await.unwrap()["admins"], json!([ADMIN]));
    assert!(hub.admin_client().request("GET", &overview, None).await.is_ok());
    let rule = "not allowed: the owner, admins and group admins see the organisation";
    assert!(refused(&rob, &overview).await.contains(rule));
    assert!(refused(&pat, &overview).await.contains(rule));
    assert!(refused(&max, &format!("/v1/org/overview?org={}", partner.0)).await.contains(rule));

    // Groups: an anonymous group's members only to those who manage it.
    ann.org(&Command::CreateGroup {
        name: "#whistle".into(),
        owner: ADMIN.into(),
        org: Some(example),
        scope: Default::default(),
        anonymous: true,
    })
    .await
    .unwrap();
    for user in [REGISTRANT, "pat@partner.net"] {
        ann.org(&Command::AddGroupMember { group: "#whistle".into(), user: user.into() })
            .await
            .unwrap();
    }
    let groups = |v: Value| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|g| (g["address"].as_str().unwrap().to_string(), g["members"].clone()))
            .collect::<Vec<_>>()
    };
    let both = json!(["pat@partner.net", REGISTRANT]);
    assert_eq!(
        groups(ann.request("GET", "/v1/org/groups", None).await.unwrap()),
        [("#whistle".to_string(), both.clone())]
    );
    assert_eq!(
        groups(max.request("GET", "/v1/org/groups", None).await.unwrap()),
        [("#whistle".to_string(), both.clone())],
        "the owner manages the organisation's groups"
    );
    assert_eq!(
        groups(hub.admin_client().request("GET", "/v1/org/groups", None).await.unwrap()),
        [("#whistle".to_string(), both)]
    );
    assert_eq!(
        groups(rob.request("GET", "/v1/org/groups", None).await.unwrap()),
        [("#whistle".to_string(), Value::Null)],
        "a member sees the group, not the others"
    );
    assert_eq!(
        groups(pat.request("GET", "/v1/org/groups", None).await.unwrap()),
        [("#whistle".to_string(), Value::Null)]
    );
    let gus = hub.as_user(GUEST).await;
    assert_eq!(groups(gus.request("GET", "/v1/org/groups", None).await.unwrap()), []);

    // The event log newest first, page by page, is the log backwards; a reader who may not
    // read every event gets only theirs, in the same order.
    let operator = hub.admin_client();
    let forward: Vec<u64> =
        operator.org_events(0).await.unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(forward.len() >= 8, "{forward:?}");
    let mut backward = Vec::new();
    let mut before = None::<u64>;
    loop {
        let path = match before {
            Some(b) => format!("/v1/org/events?newest=true&limit=3&before={b}"),
            None => "/v1/org/events?newest=true&limit=3".to_string(),
        };
        let page = operator.request("GET", &path, None).await.unwrap();
        backward
            .extend(page["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()));
        before = page["next_after"].as_u64();
        if page["more"] == json!(false) {
            break;
        }
    }
    assert_eq!(backward, forward.iter().rev().copied().collect::<Vec<_>>());
    let newest = pat.request("GET", "/v1/org/events?newest=true", None).await.unwrap();
    let partner_events: Vec<u64> =
        newest["events"].as_array().unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    let forward_pat: Vec<u64> =
        pat.org_events(0).await.unwrap().iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(!partner_events.is_empty() && partner_events.len() < forward.len());
    assert_eq!(partner_events, forward_pat.iter().rev().copied().collect::<Vec<_>>());
    assert!(
        operator
            .request("GET", "/v1/org/events?newest=true&after=1", None)
            .await
            .unwrap_err()
            .to_string()
            .contains("after: not with newest")
    );
    assert!(
        operator
            .request("GET", "/v1/org/events?before=3", None)
            .await
            .unwrap_err()
            .to_string()
            .contains("before: only with newest=true")
    );

    // A deactivated admin's token stops at once, for the views as for the rest.
    max.org(&Command::Deactivate { org: example, user: ADMIN.into() }).await.unwrap();
    for path in ["/v1/me", overview.as_str(), "/v1/org/groups"] {
        assert!(refused(&ann, path).await.contains("401"), "{path}");
    }
}
