from setuptools import find_packages, setup


def read(name):
    with open(name, encoding='utf-8') as f:
        return f.read()


DASHBOARD_REQUIRE = [
    'WebOb >= 1.8.8',
    'waitress >= 3.0',
    # The dashboard's page templates (escaping by default), and /metrics.
    'Chameleon >= 4.0',
    'prometheus_client >= 0.17',
]

# psycopg2-binary, not RelStorage's own extra: that one builds psycopg2
# from source and needs PostgreSQL's headers.
RELSTORAGE_REQUIRE = [
    'RelStorage',
    'psycopg2-binary',
]

# Zope 5 for zodbtasks.zope. ZODB 6.3 added a "class-factory" key to its
# ZConfig schema that Zope 5's own schema also defines: Zope 5 cannot read
# its zope.conf with it ("child name class-factory already used"). The
# zope.ini that mkwsgiinstance writes uses Paste's translogger.
ZOPE_REQUIRE = [
    'Zope >= 5.8, < 6',
    'ZODB < 6.3',
    'Paste',
    'PasteDeploy',
    'zope.configuration',
    'zope.processlifetime',
]

TESTS_REQUIRE = [
    'pytest',
    'pytest-timeout',
    'hypothesis',
    'cronsim',
    'croniter',
    'WebTest',
    'selenium >= 4.10',
    'zodbupdate >= 3.0',
    'zope.configuration',
    'zope.processlifetime',
    # A real Zope instance (tests/test_zope_instance.py) and its Python
    # Scripts, for restricted code.
    'Products.PythonScripts',
] + DASHBOARD_REQUIRE + RELSTORAGE_REQUIRE + ZOPE_REQUIRE + [
    # For the originals' own tests (tests/test_originals.py): their setUp
    # builds a zope.app site with a root folder and local site managers.
    'zope.app.appsetup',
    'zope.app.component',
    'zope.app.folder',
    'zope.app.publication',
    'zope.app.testing',
    'zope.container',
    'zope.security',
    'zope.site',
    'zope.testing',
    # The Pyramid application of docs/workers.rst (tests/test_pyramid.py).
    'pyramid >= 2.0',
    'pyramid_tm >= 2.4',
    'pyramid_zodbconn >= 0.8',
]

setup(
    name='zodbtasks',
    version='0.1.0.dev0',
    description='A transactional task queue and scheduler that lives in a ZODB database',
    long_description=read('README.rst') + '\n\n' + read('CHANGES.rst'),
    long_description_content_type='text/x-rst',
    license='ZPL-2.1',
    classifiers=[
        'Development Status :: 3 - Alpha',
        'Framework :: ZODB',
        'Framework :: Zope',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Topic :: System :: Distributed Computing',
    ],
    keywords='zodb task queue cron scheduler zope',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    include_package_data=True,
    package_data={'zodbtasks': ['*.zcml'],
                  'zodbtasks.dashboard': ['templates/*.pt', 'static/*.css',
                                          'static/*.js']},
    zip_safe=False,
    python_requires='>=3.10',
    install_requires=[
        'BTrees',
        'persistent',
        'transaction',
        'ZODB',
        # serve's server and the client of its socket (zodburi pulls ZEO in
        # too, but the package imports it itself).
        'ZEO',
        'zope.component',
        'zope.location',
        'zope.event',
        'zope.interface',
        'zodburi',
        'tzdata',
        # The command line's tables and progress lines.
        'rich >= 13',
    ],
    extras_require={
        'test': TESTS_REQUIRE,
        'dashboard': DASHBOARD_REQUIRE,
        'relstorage': RELSTORAGE_REQUIRE,
        'migration': ['zodbupdate >= 3.0'],
        'zope': ZOPE_REQUIRE + DASHBOARD_REQUIRE,
        'bench': ['huey', 'matplotlib'],
    },
    entry_points={
        'console_scripts': [
            'zodbtasks = zodbtasks.cli:main',
        ],
        'zodbupdate': [
            'zodbtasks = zodbtasks.migration:renames',
        ],
    },
)
