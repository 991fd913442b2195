//! Impossible travel: the speed implied by two logins' locations and times.

/// Mean Earth radius in km.
const EARTH_KM: f64 = 6371.0;

/// Great-circle distance (haversine) between two (lat, lon) points, in km.
pub fn distance_km(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, lo1, la2, lo2) = (a.0.to_radians(), a.1.to_radians(), b.0.to_radians(), b.1.to_radians());
    let h = ((la2 - la1) / 2.0).sin().powi(2) + la1.cos() * la2.cos() * ((lo2 - lo1) / 2.0).sin().powi(2);
    2.0 * EARTH_KM * h.sqrt().asin()
}

/// Speed in km/h between a login at `a` (time `t0` ms) and one at `b` (`t1` ms). `None` when the
/// distance is within GeoIP's accuracy (under 50 km) — city-level locations of one place vary.
/// Times closer than a minute count as a minute.
pub fn speed_kmh(a: (f64, f64), t0: i64, b: (f64, f64), t1: i64) -> Option<f64> {
    let d = distance_km(a, b);
    if d < 50.0 {
        return None;
    }
    let hours = ((t1 - t0).max(60_000)) as f64 / 3_600_000.0;
    Some(d / hours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn london_to_milton() {
        let d = distance_km((51.5142, -0.0931), (47.2513, -122.3149));
        assert!((7650.0..7750.0).contains(&d), "{d}");
        let hour = 3_600_000;
        assert!(speed_kmh((51.5142, -0.0931), 0, (47.2513, -122.3149), hour).is_some_and(|s| s > 7000.0));
        assert!(speed_kmh((51.5142, -0.0931), 0, (47.2513, -122.3149), 24 * hour).is_some_and(|s| s < 900.0));
        assert_eq!(speed_kmh((51.5, -0.1), 0, (51.6, -0.1), 1), None, "same city");
    }
}
