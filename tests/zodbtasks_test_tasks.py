"""A task module for the command-line tests: importing it registers 'echo'."""
import zope.component

import zodbtasks


def echo(input):
    return input


zope.component.provideUtility(zodbtasks.SimpleTask(echo), name='echo')
