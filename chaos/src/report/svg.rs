//! timeline.svg: three panels over one time axis (success rate, p99 latency, traffic share per
//! node), fault windows shaded, the mesh's reactions and the phase boundaries marked.
//!
//! Drawn with plotters' SVG backend into a String. Without a font feature plotters measures
//! text with a crude estimate and the backend writes `<text>` elements; the viewer's
//! `sans-serif` renders them.

use std::error::Error;
use std::ops::Range;
use std::time::Duration;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{secs, span, us_to_ms};
use crate::record::{slices, EventKind, RunRecord, Slice};

type Res<T = ()> = Result<T, Box<dyn Error>>;
type Area<'b> = DrawingArea<SVGBackend<'b>, Shift>;
type Chart<'a, 'b, Y> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, Y>>;

const SIZE: (u32, u32) = (1200, 900);
const HEADER: u32 = 60;
const FONT: &str = "sans-serif";
const FAULT_FILL: RGBAColor = RGBAColor(230, 70, 50, 0.14);
const FAULT_TEXT: RGBColor = RGBColor(150, 30, 20);
const PHASE: RGBColor = RGBColor(110, 110, 110);
const DOWN: RGBColor = RGBColor(128, 0, 170);
const UP: RGBColor = RGBColor(0, 140, 90);
const DECISION: RGBColor = RGBColor(30, 90, 210);
const DATA: RGBColor = RGBColor(25, 25, 25);
const GRID: RGBAColor = RGBAColor(0, 0, 0, 0.1);
/// One colour per node (Tableau 10, as 0xRRGGBB), repeating past ten nodes.
const NODE_COLORS: [u32; 10] = [
    0x1f77b4, 0xff7f0e, 0x2ca02c, 0xd62728, 0x9467bd, 0x8c564b, 0xe377c2, 0x7f7f7f, 0xbcbd22,
    0x17becf,
];
/// The success panel keeps this headroom above 100% for the phase and fault labels.
const SUCCESS_TOP: f64 = 125.0;
const SHARE_TOP: f64 = 105.0;
/// Long runs get wider slices, so that a line has at most about this many points.
const MAX_SLICES: u64 = 2000;

pub(super) fn render(record: &RunRecord) -> Result<String, String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, SIZE).into_drawing_area();
        let drawn = draw(&root, record).and_then(|()| Ok(root.present()?));
        drawn.map_err(|e| format!("drawing the timeline: {e}"))?;
    }
    Ok(buf)
}

/// A minimal SVG that says why the timeline could not be drawn.
pub(super) fn fallback(record: &RunRecord, error: &str) -> String {
    let text = format!(
        "{}: the timeline could not be drawn: {error}",
        record.scenario
    );
    let text = text
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    format!(
        "<svg width=\"1200\" height=\"80\" viewBox=\"0 0 1200 80\" \
         xmlns=\"http://www.w3.org/2000/svg\">\n<text x=\"16\" y=\"40\" \
         font-family=\"sans-serif\" font-size=\"16\">{text}</text>\n</svg>\n"
    )
}

/// What every panel needs; times in seconds.
struct Ctx<'r> {
    record: &'r RunRecord,
    x: Range<f64>,
    slices: Vec<Slice>,
    /// The slice width, for captions.
    per: String,
    faults: Vec<(f64, f64, &'r str)>,
    phases: Vec<(f64, &'r str)>,
    reactions: Vec<(f64, RGBColor)>,
}

impl<'r> Ctx<'r> {
    fn new(record: &'r RunRecord, end: Duration) -> Ctx<'r> {
        // 0.5 s up to two minutes, 1 s up to MAX_SLICES, then whole seconds (long soaks).
        let width = match end.as_secs().div_ceil(MAX_SLICES) {
            _ if end <= Duration::from_secs(120) => Duration::from_millis(500),
            secs => Duration::from_secs(secs.max(1)),
        };
        let reactions = record.events.iter().filter_map(|e| {
            let color = match e.kind {
                EventKind::Ejection | EventKind::MemberDown => DOWN,
                EventKind::Return | EventKind::MemberUp => UP,
                EventKind::Decision => DECISION,
                _ => return None,
            };
            Some((secs(e.at), color))
        });
        Ctx {
            record,
            x: 0.0..secs(end),
            slices: slices(&record.samples, &record.hits, end, width),
            per: format!("{} s", width.as_secs_f64()),
            faults: (record.faults.iter())
                .map(|f| (secs(f.start), secs(f.end.max(f.start)), f.label.as_str()))
                .collect(),
            phases: (record.phases.iter())
                .map(|p| (secs(p.start), p.name.as_str()))
                .collect(),
            reactions: reactions.collect(),
        }
    }
}

fn draw(root: &Area<'_>, record: &RunRecord) -> Res {
    root.fill(&WHITE)?;
    let (header, body) = root.split_vertically(HEADER);
    let title = format!("{}: seed {}", record.scenario, record.seed);
    let title_style = (FONT, 22).into_font().color(&DATA);
    header.draw(&Text::new(title, (16, 8), title_style))?;
    let end = span(record);
    if end.is_zero() {
        let (w, h) = body.dim_in_pixel();
        let at = (w as i32 / 2, h as i32 / 2);
        let text = "no traffic: the run recorded nothing to plot";
        body.draw(&Text::new(text, at, centered(20)))?;
        return Ok(());
    }
    key(&header)?;
    let ctx = Ctx::new(record, end);
    let panels = body.split_evenly((3, 1));
    success_panel(&panels[0], &ctx)?;
    latency_panel(&panels[1], &ctx)?;
    share_panel(&panels[2], &ctx)
}

/// The key to the marks, under the title.
fn key(header: &Area<'_>) -> Res {
    let (y, mut x) = (38, 16);
    let items = [
        ("fault window", None),
        ("ejection / member down", Some(DOWN)),
        ("return / member up", Some(UP)),
        ("decision", Some(DECISION)),
        ("phase boundary", Some(PHASE)),
    ];
    for (label, color) in items {
        match color {
            None => header.draw(&Rectangle::new(
                [(x, y), (x + 18, y + 12)],
                FAULT_FILL.filled(),
            ))?,
            Some(c) => header.draw(&PathElement::new(
                vec![(x + 9, y - 2), (x + 9, y + 14)],
                c.stroke_width(2),
            ))?,
        }
        header.draw(&Text::new(label, (x + 24, y), top_left(13, &DATA)))?;
        x += 24 + 7 * label.len() as i32 + 28;
    }
    Ok(())
}

fn success_panel(area: &Area<'_>, ctx: &Ctx) -> Res {
    let caption = format!("success rate per {} slice", ctx.per);
    let mut chart = panel(area, ctx, &caption, 0.0..SUCCESS_TOP, &percent_label, None)?;
    let nudge = ctx.x.end * 0.003;
    for (at, name) in &ctx.phases {
        let text = Text::new(*name, (at + nudge, SUCCESS_TOP - 0.5), top_left(12, &PHASE));
        chart.plotting_area().draw(&text)?;
    }
    // Fault labels alternate between two rows, so that neighbours rarely overlap.
    for (i, (start, _, label)) in ctx.faults.iter().enumerate() {
        let at = (start + nudge, SUCCESS_TOP - 9.0 - 8.5 * (i % 2) as f64);
        chart
            .plotting_area()
            .draw(&Text::new(*label, at, top_left(12, &FAULT_TEXT)))?;
    }
    let points = series(&ctx.slices, |s| s.success_rate().map(|r| r * 100.0));
    draw_line(&mut chart, points, DATA)?;
    if ctx.record.samples.is_empty() {
        let at = ((ctx.x.start + ctx.x.end) / 2.0, 50.0);
        chart
            .plotting_area()
            .draw(&Text::new("no traffic", at, centered(20)))?;
    }
    Ok(())
}

fn latency_panel(area: &Area<'_>, ctx: &Ctx) -> Res {
    let values: Vec<f64> = ctx
        .slices
        .iter()
        .filter_map(|s| s.p99_us)
        .map(us_to_ms)
        .collect();
    let (lo, hi) = log_bounds(&values);
    let caption = format!("p99 latency per {} slice (ms, log scale)", ctx.per);
    let y = (lo..hi).log_scale().with_key_points(log_ticks(lo, hi));
    let mut chart = panel(area, ctx, &caption, y, &ms_label, None)?;
    let points = series(&ctx.slices, |s| {
        s.p99_us.map(|us| us_to_ms(us).clamp(lo, hi))
    });
    draw_line(&mut chart, points, DATA)
}

fn share_panel(area: &Area<'_>, ctx: &Ctx) -> Res {
    let caption = format!(
        "share of requests the backends received, per node (retries included), per {} slice",
        ctx.per
    );
    let desc = Some("time since the start of the run (s)");
    let mut chart = panel(area, ctx, &caption, 0.0..SHARE_TOP, &percent_label, desc)?;
    let record = ctx.record;
    let mut nodes: Vec<&str> = Vec::new();
    let served = record.samples.iter().filter_map(|s| s.served_by.as_deref());
    for node in record.nodes.iter().map(String::as_str).chain(served) {
        if !nodes.contains(&node) && ctx.slices.iter().any(|s| s.share.contains_key(node)) {
            nodes.push(node);
        }
    }
    if nodes.is_empty() {
        if !record.samples.is_empty() {
            let at = ((ctx.x.start + ctx.x.end) / 2.0, 50.0);
            let text = Text::new("no answered request named its node", at, centered(16));
            chart.plotting_area().draw(&text)?;
        }
        return Ok(());
    }
    for (i, node) in nodes.iter().enumerate() {
        let [_, r, g, b] = NODE_COLORS[i % NODE_COLORS.len()].to_be_bytes();
        let color = RGBColor(r, g, b);
        let points = series(&ctx.slices, |s| {
            (!s.share.is_empty()).then(|| s.share.get(*node).copied().unwrap_or(0.0) * 100.0)
        });
        draw_line(&mut chart, points, color)?;
        let swatch = move |(x, y): (i32, i32)| {
            PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
        };
        let legend_only = std::iter::empty::<PathElement<(f64, f64)>>();
        chart.draw_series(legend_only)?.label(*node).legend(swatch);
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 13))
        .draw()?;
    Ok(())
}

/// A panel's chart with its axes, grid and marks drawn: fault windows shaded, phase
/// boundaries dashed, reactions as thin lines.
fn panel<'a, 'b, Y>(
    area: &'a Area<'b>,
    ctx: &Ctx,
    caption: &str,
    y: Y,
    y_fmt: &dyn Fn(&f64) -> String,
    x_desc: Option<&str>,
) -> Res<Chart<'a, 'b, Y::CoordDescType>>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .margin(6)
        .margin_right(24)
        .caption(caption, (FONT, 15))
        .x_label_area_size(if x_desc.is_some() { 40 } else { 22 })
        .y_label_area_size(64)
        .build_cartesian_2d(ctx.x.clone(), y)?;
    let decimals = if ctx.x.end < 10.0 { 1 } else { 0 };
    let x_fmt = |v: &f64| format!("{v:.decimals$} s");
    let mut mesh = chart.configure_mesh();
    mesh.disable_x_mesh()
        .bold_line_style(GRID)
        .light_line_style(TRANSPARENT)
        .y_labels(6)
        .x_labels(12)
        .label_style((FONT, 12))
        .axis_desc_style((FONT, 13))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(y_fmt);
    if let Some(desc) = x_desc {
        mesh.x_desc(desc);
    }
    mesh.draw()?;
    let Range { start: lo, end: hi } = chart.y_range();
    let windows = (ctx.faults.iter())
        .map(|(s, e, _)| Rectangle::new([(*s, lo), (*e, hi)], FAULT_FILL.filled()));
    chart.draw_series(windows)?;
    for (at, _) in ctx.phases.iter().filter(|(at, _)| *at > 0.0) {
        let line = vec![(*at, lo), (*at, hi)];
        chart.draw_series(DashedLineSeries::new(line, 5, 4, PHASE.stroke_width(1)))?;
    }
    let reactions = (ctx.reactions.iter()).map(|(at, color)| {
        PathElement::new(vec![(*at, lo), (*at, hi)], color.mix(0.8).stroke_width(1))
    });
    chart.draw_series(reactions)?;
    Ok(chart)
}

/// Draws `segments` as lines (a lone point as a dot).
fn draw_line<Y: Ranged<ValueType = f64>>(
    chart: &mut Chart<'_, '_, Y>,
    segments: Vec<Vec<(f64, f64)>>,
    color: RGBColor,
) -> Res {
    for segment in segments {
        if let [point] = segment[..] {
            chart.draw_series(std::iter::once(Circle::new(point, 2, color.filled())))?;
        } else {
            chart.draw_series(LineSeries::new(segment, color.stroke_width(2)))?;
        }
    }
    Ok(())
}

/// The value of each slice at its middle, cut into runs where it exists (no requests: a gap).
fn series(slices: &[Slice], value: impl Fn(&Slice) -> Option<f64>) -> Vec<Vec<(f64, f64)>> {
    let mut out: Vec<Vec<(f64, f64)>> = Vec::new();
    let mut run: Vec<(f64, f64)> = Vec::new();
    for (i, s) in slices.iter().enumerate() {
        let next = slices
            .get(i + 1)
            .map_or(0.0, |n| secs(n.start) - secs(s.start));
        let width = if next > 0.0 { next } else { 0.5 };
        match value(s) {
            Some(v) => run.push((secs(s.start) + width / 2.0, v)),
            None if !run.is_empty() => out.push(std::mem::take(&mut run)),
            None => {}
        }
    }
    if !run.is_empty() {
        out.push(run);
    }
    out
}

/// Whole decades around the values (ms), at least one decade wide.
fn log_bounds(values: &[f64]) -> (f64, f64) {
    let positive = values.iter().copied().filter(|v| v.is_finite() && *v > 0.0);
    let (min, max) = positive.fold((f64::MAX, 0.0_f64), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if max <= 0.0 {
        return (0.1, 10.0);
    }
    let lo = 10f64.powf(min.max(0.001).log10().floor());
    let hi = 10f64.powf((max * 1.2).log10().ceil());
    (lo, hi.max(lo * 10.0))
}

/// 1, 2, 5 per decade over up to three decades; whole decades over more.
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let steps: &[f64] = if hi / lo <= 1000.5 {
        &[1.0, 2.0, 5.0]
    } else {
        &[1.0]
    };
    let mut ticks = Vec::new();
    let mut decade = lo;
    while decade <= hi * 1.0001 {
        let within = steps
            .iter()
            .map(|s| s * decade)
            .filter(|v| *v <= hi * 1.0001);
        ticks.extend(within);
        decade *= 10.0;
    }
    ticks
}

/// Labels up to 100% only: the band above is for the marks' labels.
fn percent_label(v: &f64) -> String {
    if *v > 100.5 {
        String::new()
    } else {
        format!("{v:.0}%")
    }
}

fn ms_label(v: &f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn top_left(size: i32, color: &'static RGBColor) -> TextStyle<'static> {
    let style = TextStyle::from((FONT, size).into_font()).color(color);
    style.pos(Pos::new(HPos::Left, VPos::Top))
}

fn centered(size: i32) -> TextStyle<'static> {
    let style = TextStyle::from((FONT, size).into_font()).color(&DATA);
    style.pos(Pos::new(HPos::Center, VPos::Center))
}
