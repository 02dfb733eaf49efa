//! The login page: a plain form (user, password, the page to return to), no script, no
//! inline style (the Content-Security-Policy allows neither); the console's stylesheet when
//! there is one.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// The login page with `status`, an optional message, the path to return to after login,
/// and, when the users file has no user, how to add one.
pub(super) fn login(
    status: StatusCode,
    message: Option<&str>,
    next: Option<&str>,
    no_users: bool,
) -> Response {
    let mut html = String::from(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>hl7d — log in</title>\n<link rel=\"stylesheet\" href=\"/assets/console.css\">\n</head>\n\
         <body class=\"login\">\n<main>\n<h1>hl7d console</h1>\n",
    );
    if no_users {
        html.push_str(
            "<p class=\"notice\" id=\"no-users\">No console user exists yet. On the server, add one:\n\
             <code>hl7d users add NAME --role operator --config /etc/hl7d/hl7d.toml</code>\n\
             (the password is asked for, or read from standard input).</p>\n",
        );
    }
    if let Some(message) = message {
        html.push_str(&format!(
            "<p class=\"error\" role=\"alert\" id=\"login-error\">{}</p>\n",
            escape(message)
        ));
    }
    html.push_str("<form method=\"post\" action=\"/login\">\n");
    if let Some(next) = next {
        html.push_str(&format!("<input type=\"hidden\" name=\"next\" value=\"{}\">\n", escape(next)));
    }
    html.push_str(
        "<label for=\"user\">User</label>\n\
         <input id=\"user\" name=\"user\" type=\"text\" autocomplete=\"username\" required autofocus>\n\
         <label for=\"password\">Password</label>\n\
         <input id=\"password\" name=\"password\" type=\"password\" autocomplete=\"current-password\" required>\n\
         <button type=\"submit\">Log in</button>\n</form>\n</main>\n</body>\n</html>\n",
    );
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], html).into_response()
}

/// HTML text and attribute escaping.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn everything_a_caller_passes_is_escaped() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
    }
}
