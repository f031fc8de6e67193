"""What the bot does with an update: one topic per module, each with its own Router.

The modules are included, in order, in :func:`bot.app.build_dispatcher`.
"""
