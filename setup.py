from setuptools import find_packages, setup


def read(name):
    with open(name, encoding='utf-8') as f:
        return f.read()


TESTS_REQUIRE = [
    'pytest',
    'hypothesis',
    'cronsim',
    'croniter',
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
        'License :: OSI Approved :: Zope Public License',
        'Programming Language :: Python :: 3',
        'Programming Language :: Python :: 3 :: Only',
        'Topic :: System :: Distributed Computing',
    ],
    keywords='zodb task queue cron scheduler zope',
    package_dir={'': 'src'},
    packages=find_packages('src'),
    include_package_data=True,
    zip_safe=False,
    python_requires='>=3.10',
    install_requires=[
        'BTrees',
        'persistent',
        'transaction',
        'ZODB',
        'zope.component',
        'zope.interface',
        'tzdata',
    ],
    extras_require={
        'test': TESTS_REQUIRE,
    },
)
