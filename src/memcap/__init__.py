"""memcap: how many bits of its training data does a language model memorize?"""

__version__ = "0.1.0"
