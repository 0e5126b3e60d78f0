"""How the ``zodbtasks`` commands show things to a person.

Times carry their zone, durations read like "8.0 s" or "3 h 12 min", text
that is cut ends in "...", tables are drawn by rich, and a task's traceback
is shown without the frames of zodbtasks itself.
"""
import datetime
import os
import zoneinfo

#: Where zodbtasks' own modules live: their frames are left out of tracebacks.
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))

UTC = datetime.timezone.utc


def moment(t, zone=None):
    """A time in seconds as ``YYYY-MM-DD HH:MM:SS ZONE``, or ``-``.

    ``zone`` is an IANA name; without one the time is shown in UTC.
    """
    if t is None:
        return '-'
    tz = UTC if not zone else zoneinfo.ZoneInfo(zone)
    local = datetime.datetime.fromtimestamp(t, tz)
    return '%s %s' % (local.strftime('%Y-%m-%d %H:%M:%S'),
                      'UTC' if tz is UTC else local.strftime('%Z'))


def in_zone(t, zone):
    """A time in ``zone`` and, if that is not UTC, in UTC too."""
    if not zone or zone == 'UTC':
        return moment(t)
    return '%s (%s)' % (moment(t, zone), moment(t))


def duration(seconds):
    """A length of time for a person: 8.0 s, 12 min 5 s, 3 h 12 min, 2 d 4 h.
    """
    if seconds is None:
        return '-'
    sign = '-' if seconds < 0 else ''
    seconds = abs(seconds)
    if seconds < 60:
        text = '%.1f s' % seconds if seconds >= 0.1 or seconds == 0 \
            else '%.3f s' % seconds
        return sign + text
    whole = int(seconds)
    if whole < 3600:
        big, unit, rest, small = whole // 60, 'min', whole % 60, 's'
    elif whole < 86400:
        big, unit, rest, small = whole // 3600, 'h', whole % 3600 // 60, 'min'
    else:
        big, unit = whole // 86400, 'd'
        rest, small = whole % 86400 // 3600, 'h'
    text = '%d %s' % (big, unit)
    if rest:
        text += ' %d %s' % (rest, small)
    return sign + text


def cut(text, width):
    """``text`` on one line, at most ``width`` characters, ending in
    ``...`` where it was cut."""
    if text is None:
        return ''
    text = ' '.join(str(text).split())
    if len(text) <= width:
        return text
    return text[:max(0, width - 3)] + '...'


def console(out):
    """A rich console that writes to ``out``.

    On a terminal it fits the terminal; elsewhere (a pipe, a file, a test)
    it is wide and plain, so that rows never wrap and no colour codes mix
    with the text.
    """
    from rich.console import Console
    terminal = hasattr(out, 'isatty') and out.isatty()
    return Console(file=out, width=None if terminal else 200,
                   force_terminal=terminal, no_color=not terminal,
                   highlight=False, soft_wrap=False, emoji=False,
                   markup=False)


#: Above this many rows, tables are laid out here rather than by rich, which
#: takes about a millisecond a row (3 s for ``jobs --limit 3000``; this
#: takes 4 ms). Both look the same.
RICH_ROWS = 200


def table(rows, headers, out, right=(), fast=None):
    """Print ``rows`` under ``headers`` as a table (rich, simple style).

    ``right`` names the columns to align right (numbers).
    """
    rows = [['' if cell is None else str(cell) for cell in row]
            for row in rows]
    if fast is None:
        fast = len(rows) > RICH_ROWS
    if fast:
        return _plainTable(rows, headers, out, right)
    from rich import box
    from rich.table import Table
    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                 safe_box=True)
    for header in headers:
        grid.add_column(header, no_wrap=True,
                        justify='right' if header in right else 'left')
    for row in rows:
        grid.add_row(*row)
    console(out).print(grid)


def _plainTable(rows, headers, out, right):
    """The layout of `table`'s rich table, without rich."""
    widths = [max([len(h)] + [len(r[i]) for r in rows])
              for i, h in enumerate(headers)]

    def line(cells):
        return '   '.join(
            cell.rjust(width) if header in right else cell.ljust(width)
            for cell, width, header in zip(cells, widths, headers))
    write = out.write
    write(line(headers) + '\n')
    write('\u2500' * (sum(widths) + 3 * (len(widths) - 1)) + '\n')
    for row in rows:
        write(line(row) + '\n')


def _own_frame(line):
    line = line.strip()
    if not line.startswith('File "'):
        return False
    path = line[len('File "'):].split('"', 1)[0]
    return os.path.abspath(path).startswith(PACKAGE_DIR + os.sep)


def user_traceback(text):
    """A traceback without the frames of zodbtasks' own modules."""
    if not text:
        return text
    kept = []
    skipping = False
    for line in text.rstrip('\n').split('\n'):
        if line.startswith('  File "'):
            skipping = _own_frame(line)
        elif not line.startswith('    '):
            skipping = False
        if not skipping:
            kept.append(line)
    return '\n'.join(kept)


def log_without_tracebacks(lines):
    """A job's log lines with each traceback cut down to its last line."""
    shown = []
    inside = False
    for line in lines:
        if line.startswith('Traceback (most recent call last):'):
            inside = True
            continue
        if inside:
            if line.startswith(' '):
                continue
            inside = False
            shown.append('failed: %s' % line)
            continue
        shown.append(line)
    return shown


class StatusLine:
    """On a terminal, a line at the bottom that says how far a command got.

    ``render`` returns the line's text; it is called about every ``every``
    seconds. Text printed through `print`, or written to `stream()` (for a
    logging handler), appears above the line. Drawn by rich's ``Live``.
    """

    def __init__(self, out, render, every=0.5):
        from rich.live import Live
        from rich.text import Text
        self.console = console(out)
        self.live = Live(console=self.console, transient=True,
                         get_renderable=lambda: Text(render()),
                         refresh_per_second=1 / every,
                         redirect_stdout=False, redirect_stderr=False)

    def start(self):
        self.live.start()
        return self

    def stop(self):
        self.live.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def print(self, text):
        self.console.print(text, soft_wrap=True)

    def stream(self):
        """A file-like object for a logging handler: its lines go above."""
        return _Lines(self)


class _Lines:

    def __init__(self, status):
        self.status = status
        self.pending = ''

    def write(self, text):
        self.pending += text
        *lines, self.pending = self.pending.split('\n')
        for line in lines:
            self.status.print(line)

    def flush(self):
        pass
