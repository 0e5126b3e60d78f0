"""The settings of a service: checked when set, stored in its state."""
from zodbtasks.job import checkDuration


class Setting:
    """A setting of a persistent object stored in its state, checked when
    it is set (by `check`, which returns the value to store)."""

    default: object = None

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        obj._p_activate()
        return obj.__dict__.get(self.name, self.default)

    def __set__(self, obj, value):
        value = self.check(value)
        obj._p_activate()
        obj.__dict__[self.name] = value
        obj._p_changed = True

    def __delete__(self, obj):
        obj._p_activate()
        obj.__dict__.pop(self.name, None)
        obj._p_changed = True

    def check(self, value):
        return value


class Duration(Setting):
    """A setting in seconds: a bad value would otherwise reach the indexes
    with every job that uses it."""

    def __init__(self, default, positive=False, optional=False):
        self.default = default
        self.positive = positive
        self.optional = optional

    def check(self, value):
        if not (self.optional and value is None):
            checkDuration(value, self.name, positive=self.positive)
        return value


class Prefixes(Setting):
    """Module names (prefixes), such as ``trustedModules``."""

    default: object = ()

    def check(self, value):
        if isinstance(value, str):
            value = value.replace(',', ' ').split()
        try:
            prefixes = tuple(value)
        except TypeError:
            prefixes = None
        if prefixes is None or not all(
                isinstance(p, str) and p and p.strip('.') == p
                and ' ' not in p for p in prefixes):
            raise TypeError('%s is a list of module names such as '
                            '["myapp.tasks"], not %r' % (self.name, value))
        return prefixes


class Factory(Setting):
    """A class (or a callable that makes an object), or None for
    ``default()``, a function that returns the default one when it is
    first asked for."""

    def __init__(self, default, what):
        self.default_factory = default
        self.what = what

    def __get__(self, obj, owner=None):
        if obj is not None:
            obj._p_activate()
            chosen = obj.__dict__.get(self.name)
            if chosen is not None:
                return chosen
        return self.default_factory()

    def __set__(self, obj, factory):
        if factory is None:
            self.__delete__(obj)
        else:
            super().__set__(obj, factory)

    def check(self, value):
        if not callable(value):
            raise TypeError('%s is %s (or a callable that makes one) or None '
                            'for the default, not %r'
                            % (self.name, self.what, value))
        return value
