# koqa in a notebook: each block below is one cell. Run as a whole, end to end on the embedded demo
# data (a few minutes on a laptop CPU), the way a notebook runs it:
#
#     .venv/bin/python -c "import runpy; runpy.run_path('docs/notebook_example.py')"
#
# (not `python docs/notebook_example.py`: vLLM starts its engine in a spawned process, which imports
# the main script again and so would run the cells twice; a notebook has no script to import.)
# In Colab or Kaggle: install koqa (see the README), then the cells. Every keyword is a setting of the
# matching command (`koqa sft --help` lists them), checked the same way.

# %%
from koqa import api as kq
from koqa.data_tools.demo_data import demo_dir

contest = demo_dir()  # your folder with train.csv, test.csv, sample_submission.csv

# %% 1. Check and split the training data
data = kq.preprocess(contest / "train.csv", out="runs/nb/data")
print(data.stats["splits"])
data.statistics()  # a DataFrame: token and morpheme distributions

# %% 2. Fine-tune (LoRA), scoring the validation questions every 5 steps and keeping the best adapter
run = kq.train(
    data=data,
    out="runs/nb/lora",
    max_steps=10,
    eval_steps=5,
    eval_limit=24,
    eval_backend="hf",  # 24 questions over the live weights: no merge or engine start per evaluation
    validation_limit=0,
)
print(run.best)
run.log()[["step", "loss", "eval_f1"]]  # the loss and the validation F1 as a DataFrame

# %% 3. Evaluate the best and the final adapter on held-out questions, and compare them
best = kq.evaluate(data=data.validation, adapter=run, out="runs/nb/val-best")
final = kq.evaluate(data=data.validation, adapter=run, checkpoint="final", out="runs/nb/val-final")
print(best.metrics["f1"], best.metrics["f1_ci95"])
comparison = kq.compare(best, final)  # paired intervals: the same questions, two adapters
comparison.table()[["run", "f1", "exact_match", "delta_f1", "delta_f1_ci95"]]

# %% 4. What went wrong
best.predictions().head()
best.errors()[["question", "answer", "prediction", "error"]].head()
best.by_question_type()

# %% 5. Answer test.csv and write the submission
test = kq.evaluate(data=contest / "test.csv", adapter=run, out="runs/nb/test")
submitted = kq.submit(
    pred=test.path / "predictions.csv", sample=contest / "sample_submission.csv", out="runs/nb/submission.csv"
)
print(submitted)
