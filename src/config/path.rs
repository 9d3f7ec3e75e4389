//! YAML paths as error messages show them: `budgets[0].probes[1].sql_watermark.source`.

/// The path of `key` inside the mapping at `parent`. Keys that are not plain words (a label
/// like `team.name`, a source like `my db`) are quoted so the path stays unambiguous.
pub(crate) fn key(parent: &str, key: &str) -> String {
    let plain = !key.is_empty()
        && key
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-'));
    match (parent.is_empty(), plain) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{parent}.{key}"),
        (_, false) => format!("{parent}[{key:?}]"),
    }
}

/// The path of item `index` of the list at `parent`.
pub(crate) fn index(parent: &str, index: usize) -> String {
    format!("{parent}[{index}]")
}

/// How a path is shown: the document itself is `(root)`.
pub(crate) fn display(path: &str) -> &str {
    if path.is_empty() { "(root)" } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_read_like_accessors() {
        let budget = index(&key("", "budgets"), 0);
        assert_eq!(budget, "budgets[0]");
        assert_eq!(
            key(
                &key(&index(&key(&budget, "probes"), 1), "sql_watermark"),
                "source"
            ),
            "budgets[0].probes[1].sql_watermark.source"
        );
        assert_eq!(key("sources", "orders-db"), "sources.orders-db");
        assert_eq!(key("labels", "team.name"), "labels[\"team.name\"]");
        assert_eq!(display(""), "(root)");
    }
}
