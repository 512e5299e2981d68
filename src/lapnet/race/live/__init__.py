"""Live mode: one lap in, one prediction out, each driver's recurrent state carried.

    live = LiveRace(load_run("runs/race"), total_laps=57)
    for line in csv_lines:                  # laps in the order they end (session Time)
        pred = live.push_csv_line(line)     # a dict, or raises SkipLap (warn and go on)

    follow_race("runs/race", "laps.csv")    # `lapnet race live`: a feed, a growing or a finished file

A lap costs one recurrent step for its driver: the driver's hidden state and the race's
feature state (reference lap, the stint's Scored laps, gaps on the road) are kept between laps, so the
stream is never replayed. Features come from the same `RaceFeaturizer` as batch mode, the
net is causal, and FastF1's generated rows are kept or dropped as batch cleaning does (a car
that stopped mid-race: kept; after the chequered flag or of a driver without a timed lap:
skipped), so a stream of a race's laps in session-time order, given the race's length, gives
`predict_race`'s numbers on the whole file up to the rounding of the output: seconds and
probabilities are rounded to 4 decimals, so the two differ by at most 5e-5 (tests check this
on real races). Without the length, the stream gives those of `predict_race(...,
race_length="estimate")` (the rows after the flag told by the field's silence,
`LiveRace._dropped_generated`: Monza and Singapore 2023 are tests).

Modules, in the order a lap goes through them:

    lap.py       a CSV line -> one lap (`_fast_lap`), its clean masks (`lap_masks`); `SkipLap`
    state.py     `LiveRace`: the race followed, one model step a lap
    feed.py      the input as it comes: stdin, a pipe, a growing FILE (`FollowReader`)
    replay.py    a finished FILE: one race of it, its length, the order its laps ended
    options.py   --poll, --reorder, --catch-up and --driver (`DriverFilter`) checked
    follow.py    `follow_race`, the command's loop (`lapnet race live`)
"""

from lapnet.race.live.lap import SkipLap, lap_masks
from lapnet.race.live.state import LiveRace
from lapnet.race.live.feed import FollowReader, is_pipe
from lapnet.race.live.replay import file_lines, file_race_laps, replay_order
from lapnet.race.live.options import DriverFilter, check_catch_up, check_poll, check_reorder
from lapnet.race.live.follow import follow_race

__all__ = ["LiveRace", "SkipLap", "lap_masks", "follow_race", "DriverFilter", "FollowReader", "file_lines",
           "file_race_laps", "replay_order", "check_poll", "check_reorder", "check_catch_up", "is_pipe"]
