//! node_exporter 1.5's hardware collectors on Linux, read under `/sys` when `/metrics` is
//! scraped: hwmon (`/sys/class/hwmon`: temperatures, voltages, fans, power, current),
//! thermal_zone (`/sys/class/thermal`: zones and cooling devices) and cpufreq
//! (`/sys/devices/system/cpu/cpu*/cpufreq`).
//!
//! Names, types, labels, units and the hwmon chip naming are node_exporter's, so the "Node
//! Exporter Full" hardware panels and existing alert rules work unchanged. Each sysfs file is
//! read with one `read` of at most 128 bytes into a stack buffer (as node_exporter does for
//! hwmon, whose broken drivers can answer EAGAIN forever); a missing directory gives no
//! families, and a file that cannot be read or parsed leaves out only its sample. The
//! directory walks gather [`Series`]; the pure [`write_series`] sorts them into families.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;

use strata_exposition::{Exposition, Kind};

/// One sample gathered from sysfs, before it is grouped into its family.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Series {
    family: String,
    help: String,
    kind: Kind,
    /// In label-name order, as node_exporter writes them.
    labels: Vec<(&'static str, String)>,
    value: f64,
}

impl Series {
    fn gauge(
        family: impl Into<String>,
        help: impl Into<String>,
        labels: Vec<(&'static str, String)>,
        value: f64,
    ) -> Self {
        Self {
            family: family.into(),
            help: help.into(),
            kind: Kind::Gauge,
            labels,
            value,
        }
    }
}

/// Writes every hardware family found under `sys_root`.
pub(crate) fn write(sys_root: &Path, w: &mut Exposition) {
    let mut series = Vec::new();
    collect_hwmon(sys_root, &mut series);
    collect_thermal(sys_root, &mut series);
    collect_cpufreq(sys_root, &mut series);
    write_series(series, w);
}

/// Groups `series` into families sorted by name, samples sorted by label values (as
/// node_exporter's registry writes them); a repeated series keeps its first value.
pub(crate) fn write_series(mut series: Vec<Series>, w: &mut Exposition) {
    series.sort_by(|a, b| {
        a.family
            .cmp(&b.family)
            .then_with(|| a.labels.cmp(&b.labels))
    });
    series.dedup_by(|b, a| a.family == b.family && a.labels == b.labels);
    let mut current = "";
    for s in &series {
        if s.family != current {
            w.family(&s.family, s.kind, &s.help);
            current = &s.family;
        }
        let labels: Vec<(&str, &str)> = s.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
        w.sample(&s.family, &labels, s.value);
    }
}

/// The text of a small sysfs file: one `read` of at most 128 bytes, trailing newlines
/// removed, invalid UTF-8 replaced; `None` when it cannot be read.
fn read_small(path: &Path) -> Option<String> {
    let mut buf = [0u8; 128];
    let n = std::fs::File::open(path).ok()?.read(&mut buf).ok()?;
    let text = String::from_utf8_lossy(&buf[..n]);
    Some(text.trim_matches('\n').to_owned())
}

/// A number read from a small sysfs file.
fn read_number<T: std::str::FromStr>(path: &Path) -> Option<T> {
    read_small(path)?.trim().parse().ok()
}

/// node_exporter's `cleanMetricName`: lower case, anything but `[a-z0-9:_]` as `_`, and no
/// leading or trailing `_`.
pub(crate) fn clean_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| match c {
            'a'..='z' | '0'..='9' | ':' | '_' => c,
            _ => '_',
        })
        .collect();
    cleaned.trim_matches('_').to_owned()
}

/// The sensor types node_exporter reads from a hwmon directory.
const HWMON_SENSOR_TYPES: [&str; 13] = [
    "vrm",
    "beep_enable",
    "update_interval",
    "in",
    "cpu",
    "fan",
    "pwm",
    "temp",
    "curr",
    "power",
    "energy",
    "humidity",
    "intrusion",
];

/// A hwmon file name split as node_exporter's `^(?P<type>[^0-9]+)(?P<id>[0-9]*)?(_(?P<property>.+))?$`
/// does (leftmost-first): `temp1_crit_alarm` is `("temp", 1, "crit_alarm")`.
pub(crate) fn explode_sensor_filename(name: &str) -> Option<(&str, u64, &str)> {
    let type_max = name
        .find(|c: char| c.is_ascii_digit())
        .unwrap_or(name.len());
    for type_len in (1..=type_max).rev() {
        let (kind, rest) = name.split_at(type_len);
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        for id_len in (0..=digits).rev() {
            let (id, tail) = rest.split_at(id_len);
            let property = match tail {
                "" => "",
                t => match t.strip_prefix('_') {
                    Some(p) if !p.is_empty() => p,
                    _ => continue,
                },
            };
            let num = if id.is_empty() { 0 } else { id.parse().ok()? };
            return Some((kind, num, property));
        }
    }
    None
}

/// One hwmon sensor's files: property (`""` for a bare `temp1`) to raw text.
type SensorFiles = BTreeMap<String, String>;

/// Reads the sensor files of `dir` into `data`, keyed by sensor (`temp1`) then property.
fn collect_sensor_files(dir: &Path, data: &mut BTreeMap<String, SensorFiles>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        let Some((kind, num, property)) = explode_sensor_filename(file_name) else {
            continue;
        };
        if !HWMON_SENSOR_TYPES.contains(&kind) {
            continue;
        }
        if let Some(value) = read_small(&entry.path()) {
            data.entry(format!("{kind}{num}"))
                .or_default()
                .insert(property.to_owned(), value);
        }
    }
}

/// The stable name node_exporter gives a hwmon chip: `<bus>_<device>` from where its
/// `device` link points, else its cleaned `name` file, else the `hwmonN` directory name.
fn hwmon_chip(dir: &Path) -> Option<String> {
    if let Ok(device) = std::fs::canonicalize(dir.join("device")) {
        let name = device.file_name().map(|n| clean_name(&n.to_string_lossy()));
        let bus = device
            .parent()
            .and_then(Path::file_name)
            .map(|n| clean_name(&n.to_string_lossy()));
        match (bus, name) {
            (Some(bus), Some(name)) if !bus.is_empty() && !name.is_empty() => {
                return Some(format!("{bus}_{name}"));
            }
            (_, Some(name)) if !name.is_empty() => return Some(name),
            _ => {}
        }
    }
    if let Some(name) = std::fs::read_to_string(dir.join("name"))
        .ok()
        .map(|n| clean_name(&n))
        .filter(|n| !n.is_empty())
    {
        return Some(name);
    }
    let real = std::fs::canonicalize(dir).ok()?;
    Some(clean_name(&real.file_name()?.to_string_lossy())).filter(|n| !n.is_empty())
}

/// Every chip under `/sys/class/hwmon`.
fn collect_hwmon(sys_root: &Path, out: &mut Vec<Series>) {
    let Ok(entries) = std::fs::read_dir(sys_root.join("class/hwmon")) else {
        return;
    };
    for entry in entries.flatten() {
        let dir = entry.path();
        if !dir.is_dir() {
            continue;
        }
        let Some(chip) = hwmon_chip(&dir) else {
            continue;
        };
        let mut data = BTreeMap::new();
        collect_sensor_files(&dir, &mut data);
        let device = dir.join("device");
        if device.exists() {
            collect_sensor_files(&device, &mut data);
        }
        if let Some(chip_name) = std::fs::read_to_string(dir.join("name"))
            .ok()
            .map(|n| clean_name(&n))
            .filter(|n| !n.is_empty())
        {
            out.push(Series::gauge(
                "node_hwmon_chip_names",
                "Annotation metric for human-readable chip names",
                vec![("chip", chip.clone()), ("chip_name", chip_name)],
                1.0,
            ));
        }
        for (sensor, files) in &data {
            hwmon_sensor_series(&chip, sensor, files, out);
        }
    }
}

/// One hwmon sensor's series, as node_exporter 1.5 names and scales them.
pub(crate) fn hwmon_sensor_series(
    chip: &str,
    sensor: &str,
    files: &SensorFiles,
    out: &mut Vec<Series>,
) {
    let labels = || vec![("chip", chip.to_owned()), ("sensor", sensor.to_owned())];
    if let Some(label) = files.get("label") {
        out.push(Series::gauge(
            "node_hwmon_sensor_label",
            "Label for given chip and sensor",
            vec![
                ("chip", chip.to_owned()),
                ("label", label.clone()),
                ("sensor", sensor.to_owned()),
            ],
            1.0,
        ));
    }
    let Some((sensor_type, _, _)) = explode_sensor_filename(sensor) else {
        return;
    };
    let bare = files.get("");
    let bare_number = bare.and_then(|v| v.parse::<f64>().ok());
    if sensor_type == "beep_enable" {
        let on = bare.is_some_and(|v| v == "1");
        out.push(Series::gauge(
            "node_hwmon_beep_enabled",
            "Hardware beep enabled",
            labels(),
            f64::from(u8::from(on)),
        ));
        return;
    }
    let bare_family = match sensor_type {
        "vrm" => Some((
            "node_hwmon_voltage_regulator_version",
            "Hardware voltage regulator",
            1.0,
        )),
        "update_interval" => Some((
            "node_hwmon_update_interval_seconds",
            "Hardware monitor update interval",
            0.001,
        )),
        _ => None,
    };
    if let Some((family, help, scale)) = bare_family {
        if let Some(v) = bare_number {
            out.push(Series::gauge(family, help, labels(), v * scale));
        }
        return;
    }
    for (element, raw) in files {
        if element == "label" {
            continue;
        }
        let Ok(value) = raw.parse::<f64>() else {
            continue;
        };
        if let Some((family, help, kind, value)) =
            hwmon_element(sensor_type, element, value, bare.is_some())
        {
            out.push(Series {
                family,
                help,
                kind,
                labels: labels(),
                value,
            });
        }
    }
}

/// The family, help, type and scaled value of one hwmon file (`element` is the property
/// after the sensor, `""` for a bare `temp1`; `has_bare` says whether the sensor has one).
pub(crate) fn hwmon_element(
    sensor_type: &str,
    element: &str,
    value: f64,
    has_bare: bool,
) -> Option<(String, String, Kind, f64)> {
    let mut name = format!("node_hwmon_{sensor_type}");
    if element == "input" {
        if has_bare {
            name.push_str("_input");
        }
    } else if !element.is_empty() {
        name.push('_');
        name.push_str(&clean_name(element));
    }
    let gauge = |name: String, help: String, v: f64| Some((name, help, Kind::Gauge, v));
    match (sensor_type, element) {
        (_, "fault" | "alarm") => gauge(
            name,
            format!("Hardware sensor {element} status ({sensor_type})"),
            value,
        ),
        (_, "beep") => gauge(
            name + "_enabled",
            "Hardware monitor sensor has beeping enabled".to_owned(),
            value,
        ),
        ("in" | "cpu", _) => gauge(
            name + "_volts",
            format!("Hardware monitor for voltage ({element})"),
            value * 0.001,
        ),
        ("temp", e) if e != "type" => {
            let e = if e.is_empty() { "input" } else { e };
            gauge(
                name + "_celsius",
                format!("Hardware monitor for temperature ({e})"),
                value * 0.001,
            )
        }
        ("curr", _) => gauge(
            name + "_amps",
            format!("Hardware monitor for current ({element})"),
            value * 0.001,
        ),
        ("energy", _) => Some((
            name + "_joule_total",
            format!("Hardware monitor for joules used so far ({element})"),
            Kind::Counter,
            value / 1_000_000.0,
        )),
        ("power", "accuracy") => gauge(
            name,
            "Hardware monitor power meter accuracy, as a ratio".to_owned(),
            value / 1_000_000.0,
        ),
        ("power", "average_interval" | "average_interval_min" | "average_interval_max") => gauge(
            name + "_seconds",
            format!("Hardware monitor power usage update interval ({element})"),
            value * 0.001,
        ),
        ("power", _) => gauge(
            name + "_watt",
            format!("Hardware monitor for power usage in watts ({element})"),
            value / 1_000_000.0,
        ),
        ("humidity", _) => gauge(
            name,
            format!(
                "Hardware monitor for humidity, as a ratio (multiply with 100.0 to get the humidity as a percentage) ({element})"
            ),
            value / 1_000_000.0,
        ),
        ("fan", "input" | "min" | "max" | "target") => gauge(
            name + "_rpm",
            format!("Hardware monitor for fan revolutions per minute ({element})"),
            value,
        ),
        _ => gauge(
            name,
            format!("Hardware monitor {sensor_type} element {element}"),
            value,
        ),
    }
}

/// The entries of `dir` whose names start with `prefix`, with the rest of the name.
fn numbered_entries(dir: &Path, prefix: &str) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let rest = name.strip_prefix(prefix)?.to_owned();
            Some((rest, e.path()))
        })
        .collect()
}

/// Thermal zones (`node_thermal_zone_temp{type,zone}`) and cooling devices
/// (`node_cooling_device_{cur,max}_state{name,type}`) under `/sys/class/thermal`.
fn collect_thermal(sys_root: &Path, out: &mut Vec<Series>) {
    let dir = sys_root.join("class/thermal");
    for (zone, path) in numbered_entries(&dir, "thermal_zone") {
        let (Some(kind), Some(temp)) = (
            read_small(&path.join("type")),
            read_number::<i64>(&path.join("temp")),
        ) else {
            continue;
        };
        out.push(Series::gauge(
            "node_thermal_zone_temp",
            "Zone temperature in Celsius",
            vec![("type", kind.trim().to_owned()), ("zone", zone)],
            temp as f64 / 1000.0,
        ));
    }
    for (name, path) in numbered_entries(&dir, "cooling_device") {
        let (Some(kind), Some(cur), Some(max)) = (
            read_small(&path.join("type")),
            read_number::<i64>(&path.join("cur_state")),
            read_number::<i64>(&path.join("max_state")),
        ) else {
            continue;
        };
        let labels = vec![("name", name), ("type", kind.trim().to_owned())];
        out.push(Series::gauge(
            "node_cooling_device_cur_state",
            "Current throttle state of the cooling device",
            labels.clone(),
            cur as f64,
        ));
        out.push(Series::gauge(
            "node_cooling_device_max_state",
            "Maximum throttle state of the cooling device",
            labels,
            max as f64,
        ));
    }
}

/// cpufreq's kHz files and the families node_exporter 1.5 writes them to (in hertz).
const CPUFREQ_FILES: [(&str, &str, &str); 6] = [
    (
        "cpuinfo_cur_freq",
        "node_cpu_frequency_hertz",
        "Current cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_max_freq",
        "node_cpu_frequency_max_hertz",
        "Maximum cpu thread frequency in hertz.",
    ),
    (
        "cpuinfo_min_freq",
        "node_cpu_frequency_min_hertz",
        "Minimum cpu thread frequency in hertz.",
    ),
    (
        "scaling_cur_freq",
        "node_cpu_scaling_frequency_hertz",
        "Current scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_max_freq",
        "node_cpu_scaling_frequency_max_hertz",
        "Maximum scaled CPU thread frequency in hertz.",
    ),
    (
        "scaling_min_freq",
        "node_cpu_scaling_frequency_min_hertz",
        "Minimum scaled CPU thread frequency in hertz.",
    ),
];

/// Each `cpuN/cpufreq` directory under `/sys/devices/system/cpu` as `node_cpu_*frequency*`.
fn collect_cpufreq(sys_root: &Path, out: &mut Vec<Series>) {
    for (cpu, path) in numbered_entries(&sys_root.join("devices/system/cpu"), "cpu") {
        if !cpu.starts_with(|c: char| c.is_ascii_digit()) {
            continue;
        }
        let freq = path.join("cpufreq");
        if !freq.is_dir() {
            continue;
        }
        for (file, family, help) in CPUFREQ_FILES {
            if let Some(khz) = read_number::<u64>(&freq.join(file)) {
                out.push(Series::gauge(
                    family,
                    help,
                    vec![("cpu", cpu.clone())],
                    khz as f64 * 1000.0,
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::os::unix::fs::symlink;
    use std::path::PathBuf;

    /// Writes `text` to `root/rel`, creating its directories.
    fn put(root: &Path, rel: &str, text: &str) {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        std::fs::write(path, format!("{text}\n")).expect("write fixture");
    }

    /// A hwmon chip at `devices/<device>/hwmon/<hwmon>` with `files`, linked from
    /// `class/hwmon/<hwmon>` and with a `device` link when `device_link`.
    fn chip(sys: &Path, device: &str, hwmon: &str, device_link: bool, files: &[(&str, &str)]) {
        let dir = format!("devices/{device}/hwmon/{hwmon}");
        for (file, text) in files {
            put(sys, &format!("{dir}/{file}"), text);
        }
        if device_link {
            symlink("../..", sys.join(&dir).join("device")).expect("device link");
        }
        std::fs::create_dir_all(sys.join("class/hwmon")).expect("mkdir class/hwmon");
        symlink(sys.join(&dir), sys.join("class/hwmon").join(hwmon)).expect("class link");
    }

    /// The shapes of node_exporter's `collector/fixtures/sys.ttar`: a coretemp chip, a
    /// super-I/O chip with voltages, a fan, power, current and a garbled file, a nameless
    /// virtual chip, two thermal zones, a cooling device and two CPUs with cpufreq.
    fn fixture() -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path();
        chip(
            sys,
            "platform/coretemp.0",
            "hwmon1",
            true,
            &[
                ("name", "coretemp"),
                ("temp1_input", "55000"),
                ("temp1_max", "84000"),
                ("temp1_crit", "100000"),
                ("temp1_crit_alarm", "0"),
                ("temp1_label", "Package id 0"),
                ("temp2_input", "54000"),
                ("temp2_label", "Core 0"),
            ],
        );
        chip(
            sys,
            "platform/nct6775.2560",
            "hwmon2",
            true,
            &[
                ("name", "nct6779"),
                ("in0_input", "792"),
                ("in0_max", "1552"),
                ("in0_alarm", "0"),
                ("in0_beep", "0"),
                ("in0_label", "Vcore"),
                ("fan1_input", "1098"),
                ("fan1_min", "0"),
                ("fan1_pulses", "4"),
                ("fan1_alarm", "0"),
                ("power1_input", "25500000"),
                ("power1_average_interval", "1000"),
                ("power1_cap", "3000000"),
                ("curr1_input", "1200"),
                ("temp7_input", "garbage"),
                ("beep_enable", "1"),
                ("temp3_type", "2"),
                ("temp3_input", "33000"),
            ],
        );
        chip(
            sys,
            "virtual",
            "hwmon3",
            false,
            &[("name", ""), ("temp1_input", "42000")],
        );
        for (zone, kind, temp) in [("0", "x86_pkg_temp", "12376"), ("10", "acpitz", "-1500")] {
            let zone = format!("class/thermal/thermal_zone{zone}");
            put(sys, &format!("{zone}/type"), kind);
            put(sys, &format!("{zone}/temp"), temp);
            put(sys, &format!("{zone}/policy"), "step_wise");
        }
        put(sys, "class/thermal/cooling_device0/type", "Processor");
        put(sys, "class/thermal/cooling_device0/max_state", "3");
        put(sys, "class/thermal/cooling_device0/cur_state", "1");
        let cpu = "devices/system/cpu";
        for (file, text) in [
            ("cpuinfo_cur_freq", "1800000"),
            ("cpuinfo_max_freq", "3500000"),
            ("cpuinfo_min_freq", "800000"),
            ("scaling_cur_freq", "1799982"),
        ] {
            put(sys, &format!("{cpu}/cpu0/cpufreq/{file}"), text);
        }
        put(
            sys,
            &format!("{cpu}/cpu1/cpufreq/scaling_cur_freq"),
            "1200000",
        );
        for n in ["0", "1"] {
            let freq = format!("{cpu}/cpu{n}/cpufreq");
            put(sys, &format!("{freq}/scaling_max_freq"), "3500000");
            put(sys, &format!("{freq}/scaling_min_freq"), "800000");
            // Files node_exporter 1.5 requires before it reports a CPU at all.
            put(sys, &format!("{freq}/scaling_driver"), "intel_pstate");
            put(sys, &format!("{freq}/related_cpus"), n);
            put(sys, &format!("{freq}/scaling_setspeed"), "<unsupported>");
            put(sys, &format!("{freq}/scaling_governor"), "powersave");
            put(
                sys,
                &format!("{freq}/scaling_available_governors"),
                "performance powersave",
            );
        }
        put(sys, &format!("{cpu}/cpu2/online"), "1");
        put(sys, &format!("{cpu}/cpufreq/ondemand/up_threshold"), "95");
        dir
    }

    fn written(sys: &Path) -> String {
        let mut w = Exposition::default();
        write(sys, &mut w);
        w.into_text()
    }

    #[test]
    fn coretemp_chip_thermal_zone_and_cpufreq_lines_are_node_exporters() {
        let dir = tempfile::tempdir().expect("tempdir");
        let sys = dir.path();
        chip(
            sys,
            "platform/coretemp.0",
            "hwmon0",
            true,
            &[
                ("name", "coretemp"),
                ("temp1_input", "55000"),
                ("temp1_max", "84000"),
                ("temp1_crit", "100000"),
                ("temp1_label", "Package id 0"),
            ],
        );
        put(sys, "class/thermal/thermal_zone0/type", "x86_pkg_temp");
        put(sys, "class/thermal/thermal_zone0/temp", "12376");
        put(
            sys,
            "devices/system/cpu/cpu0/cpufreq/scaling_cur_freq",
            "1799982",
        );
        assert_eq!(
            written(sys),
            "# HELP node_cpu_scaling_frequency_hertz Current scaled CPU thread frequency in hertz.\n\
             # TYPE node_cpu_scaling_frequency_hertz gauge\n\
             node_cpu_scaling_frequency_hertz{cpu=\"0\"} 1799982000\n\
             # HELP node_hwmon_chip_names Annotation metric for human-readable chip names\n\
             # TYPE node_hwmon_chip_names gauge\n\
             node_hwmon_chip_names{chip=\"platform_coretemp_0\",chip_name=\"coretemp\"} 1\n\
             # HELP node_hwmon_sensor_label Label for given chip and sensor\n\
             # TYPE node_hwmon_sensor_label gauge\n\
             node_hwmon_sensor_label{chip=\"platform_coretemp_0\",label=\"Package id 0\",sensor=\"temp1\"} 1\n\
             # HELP node_hwmon_temp_celsius Hardware monitor for temperature (input)\n\
             # TYPE node_hwmon_temp_celsius gauge\n\
             node_hwmon_temp_celsius{chip=\"platform_coretemp_0\",sensor=\"temp1\"} 55\n\
             # HELP node_hwmon_temp_crit_celsius Hardware monitor for temperature (crit)\n\
             # TYPE node_hwmon_temp_crit_celsius gauge\n\
             node_hwmon_temp_crit_celsius{chip=\"platform_coretemp_0\",sensor=\"temp1\"} 100\n\
             # HELP node_hwmon_temp_max_celsius Hardware monitor for temperature (max)\n\
             # TYPE node_hwmon_temp_max_celsius gauge\n\
             node_hwmon_temp_max_celsius{chip=\"platform_coretemp_0\",sensor=\"temp1\"} 84\n\
             # HELP node_thermal_zone_temp Zone temperature in Celsius\n\
             # TYPE node_thermal_zone_temp gauge\n\
             node_thermal_zone_temp{type=\"x86_pkg_temp\",zone=\"0\"} 12.376\n"
        );
    }

    #[test]
    fn voltages_fans_power_and_current_scale_to_base_units() {
        let dir = fixture();
        let out = written(dir.path());
        for line in [
            "node_hwmon_in_volts{chip=\"platform_nct6775_2560\",sensor=\"in0\"} 0.792",
            "node_hwmon_in_max_volts{chip=\"platform_nct6775_2560\",sensor=\"in0\"} 1.552",
            "node_hwmon_in_alarm{chip=\"platform_nct6775_2560\",sensor=\"in0\"} 0",
            "node_hwmon_in_beep_enabled{chip=\"platform_nct6775_2560\",sensor=\"in0\"} 0",
            "node_hwmon_fan_rpm{chip=\"platform_nct6775_2560\",sensor=\"fan1\"} 1098",
            "node_hwmon_fan_min_rpm{chip=\"platform_nct6775_2560\",sensor=\"fan1\"} 0",
            "node_hwmon_fan_pulses{chip=\"platform_nct6775_2560\",sensor=\"fan1\"} 4",
            "node_hwmon_power_watt{chip=\"platform_nct6775_2560\",sensor=\"power1\"} 25.5",
            "node_hwmon_power_average_interval_seconds{chip=\"platform_nct6775_2560\",sensor=\"power1\"} 1",
            "node_hwmon_curr_amps{chip=\"platform_nct6775_2560\",sensor=\"curr1\"} 1.2",
            "node_hwmon_beep_enabled{chip=\"platform_nct6775_2560\",sensor=\"beep_enable0\"} 1",
            "node_hwmon_temp_crit_alarm_celsius{chip=\"platform_coretemp_0\",sensor=\"temp1\"} 0",
            // No device link and an empty name file: the hwmonN directory names the chip.
            "node_hwmon_temp_celsius{chip=\"hwmon3\",sensor=\"temp1\"} 42",
            "node_thermal_zone_temp{type=\"acpitz\",zone=\"10\"} -1.5",
            "node_cooling_device_cur_state{name=\"0\",type=\"Processor\"} 1",
            "node_cooling_device_max_state{name=\"0\",type=\"Processor\"} 3",
            "node_cpu_frequency_max_hertz{cpu=\"0\"} 3500000000",
            "node_cpu_scaling_frequency_min_hertz{cpu=\"1\"} 800000000",
        ] {
            assert!(out.lines().any(|l| l == line), "no line {line} in\n{out}");
        }
        // The garbled temp7_input is left out, the rest of its chip is not.
        assert!(!out.contains("temp7"), "{out}");
        assert!(!out.contains("cpu=\"2\""), "{out}");
        assert!(!out.contains("chip=\"hwmon3\",chip_name"), "{out}");
    }

    #[test]
    fn no_sysfs_means_no_families() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(written(dir.path()), "");
        assert_eq!(written(&dir.path().join("missing")), "");
    }

    #[test]
    fn sensor_file_names_split_as_node_exporters_pattern() {
        for (name, split) in [
            ("temp1_input", Some(("temp", 1, "input"))),
            ("temp1_crit_alarm", Some(("temp", 1, "crit_alarm"))),
            ("in0", Some(("in", 0, ""))),
            ("beep_enable", Some(("beep_enable", 0, ""))),
            (
                "pwm1_auto_point1_temp",
                Some(("pwm", 1, "auto_point1_temp")),
            ),
            ("temp01_max", Some(("temp", 1, "max"))),
            ("temp_x1y", Some(("temp", 0, "x1y"))),
            ("in0_", None),
            ("1abc", None),
            ("", None),
        ] {
            assert_eq!(explode_sensor_filename(name), split, "{name}");
        }
        assert_eq!(clean_name("Package id 0\n"), "package_id_0");
        assert_eq!(clean_name("__A-b.c__"), "a_b_c");
    }

    /// Every sample as `series -> value`, and every HELP/TYPE line, of an exposition text.
    fn parsed(text: &str) -> (BTreeMap<String, f64>, BTreeSet<String>) {
        let mut samples = BTreeMap::new();
        let mut meta = BTreeSet::new();
        for line in text.lines() {
            if line.starts_with('#') {
                meta.insert(line.to_owned());
            } else if let Some((series, v)) = line.rsplit_once(' ') {
                samples.insert(series.to_owned(), v.parse().expect("a number"));
            }
        }
        (samples, meta)
    }

    /// Debian's node_exporter 1.5, run on the same fixture tree, writes the same families,
    /// help, types, series and values.
    #[test]
    fn node_exporter_on_the_same_tree_agrees() {
        if !strata_tests::prereq::NODE_EXPORTER.check() {
            return;
        }
        let dir = fixture();
        let theirs = strata_tests::node_exporter_output(&[
            format!("--path.sysfs={}", dir.path().display()),
            "--collector.disable-defaults".into(),
            "--collector.hwmon".into(),
            "--collector.thermal_zone".into(),
            "--collector.cpufreq".into(),
        ]);
        let ours_prefixes = [
            "node_hwmon_",
            "node_thermal_zone_",
            "node_cooling_device_",
            "node_cpu_",
        ];
        let theirs: String = theirs
            .lines()
            .filter(|l| {
                let name = l
                    .trim_start_matches("# HELP ")
                    .trim_start_matches("# TYPE ");
                ours_prefixes.iter().any(|p| name.starts_with(p))
            })
            .map(|l| format!("{l}\n"))
            .collect();
        let (their_samples, their_meta) = parsed(&theirs);
        let (our_samples, our_meta) = parsed(&written(dir.path()));
        assert!(
            their_samples
                .keys()
                .any(|s| s.starts_with("node_cpu_frequency_hertz")),
            "{theirs}"
        );
        assert!(their_samples.len() > 35, "{theirs}");
        assert_eq!(our_meta, their_meta);
        assert_eq!(our_samples, their_samples);
    }

    #[test]
    fn promtool_accepts_the_hardware_families() {
        if !strata_tests::prereq::PROMTOOL.check() {
            return;
        }
        let dir = fixture();
        let findings = strata_tests::promtool_findings_beyond_node_exporter(&written(dir.path()));
        assert_eq!(findings.expect("promtool runs"), Vec::<String>::new());
    }

    #[test]
    fn a_directory_where_a_file_should_be_is_skipped() {
        let dir = fixture();
        let zone: PathBuf = dir.path().join("class/thermal/thermal_zone0/temp");
        std::fs::remove_file(&zone).expect("rm");
        std::fs::create_dir(&zone).expect("mkdir");
        let out = written(dir.path());
        assert!(!out.contains("zone=\"0\""), "{out}");
        assert!(out.contains("zone=\"10\""), "{out}");
    }
}
