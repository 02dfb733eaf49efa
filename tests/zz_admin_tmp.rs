#[path = "it/admin.rs"]
mod admin;
#[path = "it/support.rs"]
#[allow(dead_code)]
mod support;
