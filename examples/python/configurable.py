"""`init_args` reach the constructor; `user_config` reaches `reconfigure` at start and on change."""


class Thresholded:
    def __init__(self, model="small"):
        self.model = model
        self.config = None

    def reconfigure(self, user_config):
        self.config = user_config

    def __call__(self, request):
        return {"model": self.model, "config": self.config}
