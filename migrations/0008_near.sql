-- emtrack schema, version 8: "who was near" without PostGIS.
--
-- `emtrack_cell(lat, lon)` numbers a grid of 1/400 degree (about 280 m
-- north-south, 200 m east-west at 45°), row-major: the cells of one
-- latitude row are consecutive numbers, so a circle's bounding box is one
-- range of cell numbers per row (`emtrack_near_cells`). `fixes_near`
-- indexes (cell, time) and carries the position, so `emtrack_fixes_near`
-- reads only the index ranges of the box's rows, in the period's daily
-- partitions, then those fixes, and computes the exact distance on the
-- engine's sphere (radius 6,371,008.8 m) for them. Upgrading a large
-- database: this migration builds the index over every stored fix (about
-- 75 s per 50 M fixes here) and holds the table meanwhile. Longitudes are clamped at ±180°: a
-- circle across the antimeridian is searched on one side only.

CREATE FUNCTION emtrack_cell(lat double precision, lon double precision) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $$
    SELECT floor((lat + 90) * 400)::bigint * 144001 + floor((lon + 180) * 400)::bigint
$$;

CREATE INDEX fixes_near ON fixes (emtrack_cell(lat, lon), fix_time) INCLUDE (lat, lon, accuracy_m);

-- The cell ranges, one per latitude row, covering the bounding box of the
-- circle of radius_m metres around (lat, lon).
CREATE FUNCTION emtrack_near_cells(lat double precision, lon double precision, radius_m double precision,
                                   OUT lo bigint, OUT hi bigint) RETURNS SETOF record
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE ROWS 8 AS $$
    WITH b AS (
        SELECT greatest(lat - d, -90) AS lat_lo, least(lat + d, 90) AS lat_hi, d
        FROM (SELECT radius_m / (6371008.8 * pi() / 180) AS d) x
    ), w AS (
        SELECT lat_lo, lat_hi,
               radius_m / (6371008.8 * pi() / 180 * cos(radians(least(greatest(abs(lat_lo), abs(lat_hi)), 89.9)))) AS dlon
        FROM b
    ), c AS (
        SELECT floor((lat_lo + 90) * 400)::bigint AS r_lo, floor((lat_hi + 90) * 400)::bigint AS r_hi,
               floor((greatest(lon - dlon, -180) + 180) * 400)::bigint AS c_lo,
               floor((least(lon + dlon, 180) + 180) * 400)::bigint AS c_hi
        FROM w
    )
    SELECT r * 144001 + c_lo, r * 144001 + c_hi FROM c, generate_series(r_lo, r_hi) AS r
$$;

-- Every fix within within_m metres of (at_lat, at_lon) in [t1, t2), with
-- its distance. The cell ranges go into the statement as literals (an OR
-- of BETWEENs, one index range scan each): with them as parameters of a
-- join, the planner takes each range for 0.5 % of the table and reads the
-- period's partitions whole instead. EXECUTE plans once per call with the
-- values known, which also prunes the partitions to the period.
CREATE FUNCTION emtrack_fixes_near(at_lat double precision, at_lon double precision,
                                   within_m double precision, t1 timestamptz, t2 timestamptz)
RETURNS TABLE (device_id text, fix_time timestamptz, lat double precision, lon double precision,
               accuracy_m real, distance_m double precision)
LANGUAGE plpgsql STABLE STRICT PARALLEL SAFE ROWS 1000 AS $$
DECLARE
    cells text;
BEGIN
    SELECT string_agg(format('emtrack_cell(f.lat, f.lon) BETWEEN %s AND %s', c.lo, c.hi), ' OR ')
      INTO cells FROM emtrack_near_cells(at_lat, at_lon, within_m) AS c;
    RETURN QUERY EXECUTE format(
        'SELECT * FROM (
             SELECT f.device_id, f.fix_time, f.lat, f.lon, f.accuracy_m,
                    2 * 6371008.8 * asin(sqrt(power(sin(radians(f.lat - $1) / 2), 2)
                        + cos(radians($1)) * cos(radians(f.lat)) * power(sin(radians(f.lon - $2) / 2), 2))) AS distance_m
             FROM fixes f WHERE (%s) AND f.fix_time >= $4 AND f.fix_time < $5) n
         WHERE n.distance_m <= $3', cells)
    USING at_lat, at_lon, within_m, t1, t2;
END
$$;
