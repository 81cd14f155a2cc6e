//! Owns the security-question factor: at enrolment the user picks one of three questions (or
//! writes one) and answers it; the answer is kept hashed. At sign-in the question is shown and
//! the answer compared, normalised (case and spacing do not matter). Five wrong answers in a row
//! lock the factor for 15 minutes. Grants: `clock`, `random`, `state`.
#![cfg_attr(target_arch = "wasm32", no_std)]

use concierge_plugin_sdk::prelude::*;

const QUESTION: Key<Text> = Key::new("question");
const ANSWER: Key<Hashed> = Key::new("answer");
const ATTEMPTS: Attempts = Attempts::new("attempts", 5, 15 * 60);
const PRESETS: [[&str; 2]; 3] = [
    ["What was your first school?", "처음 다닌 학교는?"],
    ["Your mother's city of birth?", "어머니의 출생지는?"],
    ["Your first pet's name?", "첫 반려동물의 이름은?"],
];

struct SecurityQuestion;
export!(SecurityQuestion);

impl Factor for SecurityQuestion {
    fn describe() -> Description {
        Description::new("security-question", text("Security question", "보안 질문")).amr("kba")
    }

    fn is_enrolled(_: &User) -> bool {
        QUESTION.is_set() && ANSWER.is_set()
    }

    fn enroll_begin(_: &User) -> Result<Form> {
        let intro = text(
            "Type a question (10 to 200 characters) or the number of one of these, and its answer:",
            "질문(10~200자)이나 아래 질문의 번호를 입력하고 답을 입력하세요:",
        );
        Ok(Form::new(intro.with_choices(&PRESETS))
            .field(Field::text("question", text("Question", "질문")).max_length(200))
            .field(Field::text("answer", text("Answer", "답"))))
    }

    fn enroll_finish(_: &User, answer: &Answer) -> Result<EnrollStep> {
        let own = answer.text("question");
        let own = (10..=200)
            .contains(&own.chars().count())
            .then(|| Text::same(own));
        let reply = answer.normalized("answer");
        match answer.choice("question", &PRESETS).or(own) {
            Some(question) if reply.chars().count() >= 3 => {
                QUESTION.set(&question)?;
                ANSWER.set(&Hashed::new(&reply)?)?;
                ATTEMPTS.reset();
                Ok(EnrollStep::Done)
            }
            _ => Err(Error::bad_input(text(
                "Give a question (or its number) and an answer of 3 characters or more.",
                "질문(또는 번호)과 3자 이상의 답을 입력하세요.",
            ))),
        }
    }

    fn challenge(_: &User) -> Result<Form> {
        let question = QUESTION.get().ok_or(Error::NotEnrolled)?;
        Ok(Form::new(question).field(Field::text("answer", text("Answer", "답"))))
    }

    fn verify(_: &User, answer: &Answer) -> Result<Verdict> {
        let stored = ANSWER.get().ok_or(Error::NotEnrolled)?;
        let wrong = text("That answer is not correct.", "답이 올바르지 않습니다.");
        ATTEMPTS.verify(|| stored.matches(&answer.normalized("answer")), wrong)
    }
}
