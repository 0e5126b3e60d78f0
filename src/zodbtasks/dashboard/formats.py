"""How the templates show values: times, durations, reprs, statuses."""
from zodbtasks.display import duration
from zodbtasks.display import in_zone
from zodbtasks.display import moment
from zodbtasks.display import user_traceback

_SHOWN_REPR = 2000   # characters of a job's input or output shown


def short_repr(value):
    """``repr(value)``, cut to a length a page can show."""
    try:
        text = repr(value)
    except Exception as error:   # a broken __repr__ must not break the page
        text = '(no repr: %s)' % type(error).__name__
    if len(text) > _SHOWN_REPR:
        text = text[:_SHOWN_REPR] + '... (%d characters)' % len(text)
    return text


def status_class(status):
    """The CSS classes of a status."""
    return 'status status-' + ''.join(c if c.isalnum() else '-'
                                      for c in str(status))


class Format:
    """The helpers the templates use to show values, as of ``now``."""

    def __init__(self, now):
        self.now = now

    def time(self, t, zone=None):
        if t is None:
            return '-'
        try:
            return in_zone(t, zone) if zone else moment(t)
        except (TypeError, ValueError, OverflowError, OSError, LookupError):
            return repr(t)

    def ago(self, t):
        if t is None:
            return ''
        seconds = self.now - t
        if seconds < 0:
            return 'in ' + duration(-seconds)
        return duration(seconds) + ' ago'

    def duration(self, seconds):
        return duration(seconds)

    def repr(self, value):
        return short_repr(value)

    def status(self, status):
        return status_class(status)

    def percent(self, fraction):
        try:
            return '%d%%' % round(fraction * 100)
        except (TypeError, ValueError, OverflowError):
            return '-'

    def traceback(self, text):
        return user_traceback(text)
