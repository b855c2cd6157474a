//! The drill's self-contained HTML report: one file, no network, no library — the report's JSON is embedded and
//! drawn on canvases by a small inline script, so it opens offline on a technician's laptop and prints.

use crate::drill::DrillReport;

const TEMPLATE: &str = include_str!("report.html");
const PLACEHOLDER: &str = "/*REPORT_JSON*/";

/// Renders `report` into the HTML page.
pub fn render(report: &DrillReport) -> Result<String, serde_json::Error> {
    let json = serde_json::to_string(report)?;
    // Inside <script>, a `<` could end the element (`</script>`) or open a comment: JSON allows `\u003c` in strings,
    // the only place a `<` can occur.
    let json = json.replace('<', "\\u003c");
    Ok(TEMPLATE.replacen(PLACEHOLDER, &json, 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::drill::{Scenario, judge};
    use crate::swarm::SwarmReport;

    #[test]
    fn the_json_is_embedded_once_and_cannot_close_the_script() {
        let scenario = Scenario::from_toml_str(
            "name = \"x\"\ntitle = \"</script><script>alert(1)</script>\"\nsites = 1\nduration_s = 5\nmix = \"fibre:100\"\n",
        )
        .unwrap();
        let report = judge(&scenario, SwarmReport::default(), None, 0, "test".into());
        let html = render(&report).unwrap();
        assert_eq!(TEMPLATE.matches(PLACEHOLDER).count(), 1);
        assert!(!html.contains(PLACEHOLDER));
        assert_eq!(html.matches("</script>").count(), TEMPLATE.matches("</script>").count());
        let start = html.find("type=\"application/json\">").unwrap() + "type=\"application/json\">".len();
        let end = start + html[start..].find("</script>").unwrap();
        let back: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
        assert_eq!(back["scenario"]["title"], "</script><script>alert(1)</script>");
    }
}
